"""modelfactory.secrets: the one rule for "is this name secret", and every place that applies it.

The end-to-end check that nothing lands on disk is tests/test_secrets.py; this file pins the rule itself,
so settings, the cache key and the command-line guard can never disagree on a name again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from modelfactory.backends.openai import OpenAIServerModel
from modelfactory.cache import request_key
from modelfactory.model import GenerationRequest
from modelfactory.overrides import scrub_saved_config, secret_overrides
from modelfactory.secrets import (
    REDACTED,
    has_url_secret,
    is_secret_key,
    mask_config_secrets,
    mask_url,
    mask_urls,
    redact_env,
    redact_mapping,
    scrub,
    url_has_secret,
)

# name -> secret? Each disputed name (the five old lists disagreed on it) is marked with why.
NAMES = [
    ("api_key", True),
    ("API_KEY", True),
    ("apiKey", True),
    ("x-api-key", True),
    ("OPENAI_API_KEY", True),
    ("token", True),
    ("hf_token", True),
    ("HF_TOKEN", True),
    ("Authorization", True),
    ("client_secret", True),
    ("password", True),
    ("passwd", True),  # disputed: only overrides knew it
    ("db_passwd", True),
    ("cookie", True),  # disputed: only overrides knew it
    ("cookies", True),
    ("session_cookie", True),
    ("credentials", True),
    ("GOOGLE_APPLICATION_CREDENTIALS", True),
    ("sig", True),  # disputed: only the cache key knew it (Azure SAS)
    ("X-Amz-Signature", True),
    ("model.client_kwargs.default_headers.Authorization", True),  # the last dotted part decides
    ("tokenizer_token", True),  # a token for the tokenizer's repo is still a token
    ("secret_tokens", True),
    ("tokenizer_id", False),  # disputed: settings and the cache key called it secret
    ("tokenizer", False),
    ("TOKENIZERS_PARALLELISM", False),
    ("max_tokens", False),
    ("max_new_tokens", False),
    ("max_completion_tokens", False),
    ("tokens", False),
    ("model_id", False),
    ("api_base", False),
    ("temperature", False),
    ("design", False),  # "sig" only as a whole word
    ("signal", False),
    ("api-version", False),
    ("prompt", False),
    ("model.api_key.note", False),
]


@pytest.mark.parametrize(("name", "secret"), NAMES)
def test_one_rule_for_secret_names(name: str, secret: bool) -> None:
    assert is_secret_key(name) is secret


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("https://user:pw@example.com/v1", True),
        ("https://example.blob.core.windows.net/c?sv=2024&sig=abc", True),
        ("https://example.com/v1?api_key=abc", True),
        ("https://example.com/v1?api-version=2024-10-21", False),
        ("https://example.com/v1?token=", False),  # an empty value holds nothing
        ("https://user@example.com/v1", False),  # a user name alone is not a credential
        ("http://127.0.0.1:8000/v1", False),
        ("not a url", False),
    ],
)
def test_url_secrets(url: str, secret: bool) -> None:
    assert url_has_secret(url) is secret
    assert has_url_secret(f"see {url} for details") is secret


def test_every_consumer_applies_the_same_rule(tmp_path: Path) -> None:
    for name, secret in NAMES:
        if "." in name:
            continue
        # settings / to_dict
        assert (redact_mapping({name: "v"})[name] == REDACTED) is secret, name
        # the command-line guard
        assert bool(secret_overrides([f"model.{name}=v"])) is secret, name
        # Hydra's saved config
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"model:\n  {name}: v\n", encoding="utf-8")
        assert scrub_saved_config(path) is secret, name


def test_the_cache_key_ignores_secret_query_parameters_only() -> None:
    req = GenerationRequest(messages=[{"role": "user", "content": "hi"}])

    def key(base: str) -> str:
        return request_key(OpenAIServerModel(model_id="m", api_base=base, api_key="k"), req)

    assert key("http://h:1/v1?sig=one") == key("http://h:1/v1?sig=two") == key("http://h:1/v1")
    assert key("http://h:1/v1?passwd=one") == key("http://h:1/v1")
    assert key("http://h:1/v1?signal=one") != key("http://h:1/v1")


def test_redact_mapping_nested_and_secretstr() -> None:
    data = {
        "api_key": SecretStr("sk-1"),
        "empty": SecretStr(""),
        "headers": {"Cookie": "c=1", "Accept": "json"},
        "members": [{"token": "t"}, {"token": None}],
        "max_tokens": 5,
    }
    assert redact_mapping(data) == {
        "api_key": REDACTED,
        "empty": "",
        "headers": {"Cookie": REDACTED, "Accept": "json"},
        "members": [{"token": REDACTED}, {"token": None}],
        "max_tokens": 5,
    }


def test_mask_config_secrets_keeps_interpolations() -> None:
    node = {"api_key": "${oc.env:K}", "nested": [{"passwd": "p"}], "token": "null"}
    assert mask_config_secrets(node) is True
    assert node == {"api_key": "${oc.env:K}", "nested": [{"passwd": REDACTED}], "token": "null"}
    assert mask_config_secrets(node) is False


def test_scrub_longest_first_and_not_placeholders() -> None:
    assert scrub("key sk-abc and sk-abcdef", ["sk-abc", "sk-abcdef"]) == "key *** and ***"
    assert scrub("a key of x", ["x"]) == "a key of x"


def test_redact_env_uses_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_DB_PASSWD", "hunter2-long-value")
    monkeypatch.setenv("MY_TOKENIZER_NAME", "some/tokenizer-repo")
    monkeypatch.setenv("MY_SHORT_TOKEN", "abc")
    text = "hunter2-long-value some/tokenizer-repo abc"
    assert redact_env(text) == "*** some/tokenizer-repo abc"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://user:pw@example.com/v1", f"https://user:{REDACTED}@example.com/v1"),
        ("https://h/c?sv=2024&sig=abc%3D&x=1", f"https://h/c?sv=2024&sig={REDACTED}&x=1"),
        ("https://h/v1?api-version=2024-10-21", "https://h/v1?api-version=2024-10-21"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
    ],
)
def test_mask_url_keeps_the_endpoint_readable(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert mask_urls(f"calling {url} now") == f"calling {masked} now"


def test_credentials_inside_urls_are_masked_in_dicts_and_saved_configs() -> None:
    data = {"api_base": "https://u:pw@h/v1", "models": [{"base_url": "https://h/?key=k"}]}
    assert redact_mapping(data) == {
        "api_base": f"https://u:{REDACTED}@h/v1",
        "models": [{"base_url": f"https://h/?key={REDACTED}"}],
    }
    node = {"api_base": "https://u:pw@h/v1", "other": "${oc.env:URL}", "list": ["https://h/?sig=s"]}
    assert mask_config_secrets(node) is True
    assert node == {
        "api_base": f"https://u:{REDACTED}@h/v1",
        "other": "${oc.env:URL}",
        "list": [f"https://h/?sig={REDACTED}"],
    }
    assert mask_config_secrets(node) is False
