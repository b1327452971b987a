"""modelfactory.secrets: the one rule for "is this name secret", and every place that applies it.

The end-to-end check that nothing lands on disk is tests/test_secrets.py; this file pins the rule itself,
so settings, the cache key and the command-line guard can never disagree on a name again.
"""

from __future__ import annotations

import base64
import itertools
import logging
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from modelfactory._overrides import scrub_saved_config, secret_overrides
from modelfactory.backends.openai import OpenAIServerModel
from modelfactory.cache import request_key
from modelfactory.model import GenerationRequest
from modelfactory.secrets import (
    REDACTED,
    StreamScrubber,
    credential_values,
    has_url_secret,
    is_secret_key,
    mask_config_secrets,
    mask_url,
    mask_urls,
    redact_env,
    redact_mapping,
    scrub,
    scrubbed_logs,
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
    ("stop_token_ids", False),  # vocabulary ids (issue 22, item 7)
    ("eos_token_id", False),
    ("keywords", False),
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
        # a user name alone is a token (https://TOKEN@host): the command line refuses it, so it is masked too
        ("https://user@example.com/v1", True),
        ("http://:pw@example.com/v1", True),
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
        ("http://:pw@h/v1", f"http://:{REDACTED}@h/v1"),
        ("http://sk-token@h/v1", f"http://{REDACTED}@h/v1"),
        ("ftp://u:p@ss@h/v1", f"ftp://u:{REDACTED}@h/v1"),  # a raw "@" in the password: all of it
        ("https://h/v1?api_key=k&x=1", f"https://h/v1?api_key={REDACTED}&x=1"),
        ("https://h/c?sv=2024&sig=abc%3D&x=1", f"https://h/c?sv=2024&sig={REDACTED}&x=1"),
        ("https://h/v1?api-version=2024-10-21", "https://h/v1?api-version=2024-10-21"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        # unparsable (issue 22, item 9: a config error quoted it whole): the userinfo is masked still
        ("http://u:pw@[bad/v1", f"http://u:{REDACTED}@[bad/v1"),
        ("http://u:pw@h:99999999/v1?code=c", f"http://u:{REDACTED}@h:99999999/v1?code={REDACTED}"),
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


# --------------------------------------------------------------------------- credentials by place, not name


def test_header_values_are_credentials_whatever_the_header_is_called() -> None:
    """Issue 16 item 4: a key from an env var named anything (GEN_CRED) in a non-public header."""
    data = {
        "client_kwargs": {"default_headers": {"X-Upstream-Cred": "k1", "Accept": "application/json"}},
        "generation_kwargs": {"api_key": "k2", "top_k": 3},
    }
    assert redact_mapping(data) == {
        "client_kwargs": {"default_headers": {"X-Upstream-Cred": REDACTED, "Accept": "application/json"}},
        "generation_kwargs": {"api_key": REDACTED, "top_k": 3},
    }
    assert redact_mapping({"X-Upstream-Cred": "k1"}, "default_headers") == {"X-Upstream-Cred": REDACTED}
    node = {
        "model": {
            "client_kwargs": {"default_headers": {"X-Upstream-Cred": "k1", "X-Env": "${oc.env:GEN_CRED}"}},
            "api_key": "${oc.env:UNSET_16,sk-default}",
        }
    }
    assert mask_config_secrets(node) is True
    assert node == {
        "model": {
            "client_kwargs": {
                "default_headers": {"X-Upstream-Cred": REDACTED, "X-Env": "${oc.env:GEN_CRED}"}
            },
            "api_key": REDACTED,
        }
    }


def test_a_config_files_url_credentials_are_masked_in_the_saved_copy(tmp_path: Path) -> None:
    """Issue 16 item 3: user:K@, :K@, K@ and ?api_key=K in a config file's URL-valued fields."""
    path = tmp_path / "config.yaml"
    path.write_text(
        "model:\n"
        "  api_base: ftp://u:K-one-1111@h/v1\n"
        "  base_url: http://:K-two-2222@h/v1\n"
        "  members: [http://K-three-3333@h/v1, 'http://h/v1?api_key=K-four-4444']\n",
        encoding="utf-8",
    )
    assert scrub_saved_config(path) is True
    text = path.read_text(encoding="utf-8")
    assert "K-" not in text and text.count(REDACTED) == 4
    assert "ftp://u:" in text and "@h/v1" in text  # the endpoint stays readable


secret_text = st.text(alphabet="abcdefgh-", min_size=4, max_size=12)


@given(
    secrets=st.lists(secret_text, min_size=1, max_size=3),
    text=st.text(alphabet="abcdefgh- ", max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
    data=st.data(),
)
def test_a_stream_scrubber_catches_a_key_split_across_pieces(
    secrets: list[str], text: str, cuts: list[int], data: st.DataObject
) -> None:
    """Issue 16 item 5: however a streamed reply is cut, no key reaches the output, and with one key the
    output is what scrubbing the whole text gives."""
    where = data.draw(st.integers(min_value=0, max_value=len(text)))
    text = text[:where] + secrets[0] + text[where:]
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    scrubber = StreamScrubber(secrets)
    out = "".join(scrubber.feed(text[a:b]) for a, b in itertools.pairwise(bounds)) + scrubber.flush()
    assert not any(s in out for s in secrets)
    if len(secrets) == 1:
        assert out == scrub(text, secrets)


def test_log_records_are_scrubbed_as_they_are_made(caplog: pytest.LogCaptureFixture) -> None:
    """httpx logs ``HTTP Request: POST http://u:KEY@host/...``: what reaches a handler is masked."""
    log = logging.getLogger("test.secrets.logs")
    with caplog.at_level(logging.INFO):
        with scrubbed_logs(lambda t: scrub(t, ["hdr-cred-0000"])):
            log.info("HTTP Request: POST %s", "http://u:url-cred-1111@h/v1/chat")
            try:
                raise RuntimeError("upstream said hdr-cred-0000")
            except RuntimeError:
                log.exception("failed")
        log.info("after: %s", "hdr-cred-0000")  # outside: left alone
    text = caplog.text
    assert "url-cred-1111" not in text and f"u:{REDACTED}@h" in text
    assert text.count("hdr-cred-0000") == 1 and "after: hdr-cred-0000" in text


# --------------------------------------------------------------------------- issue 22, item 4: derived forms


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


KEY = "sk-derived/planted+7300?=ab"  # "/", "+", "?" and "=": its URL-encoded form differs from it


@pytest.mark.parametrize(
    "form",
    [
        _b64(KEY),  # base64 of the key alone
        _b64(f"{KEY}:"),  # HTTP Basic with the key as the user (https://KEY@host)
        _b64(f":{KEY}"),  # ... and as the password with no user (https://:KEY@host)
        _b64url(f":{KEY}"),
        _b64(f":{KEY}").rstrip("="),  # unpadded
        quote(KEY, safe=""),  # URL-encoded
        f"Bearer {KEY}",
    ],
)
def test_every_derived_form_of_a_secret_is_scrubbed(form: str) -> None:
    out = scrub(f"the server echoed [{form}] back", [KEY])
    assert out == (
        "the server echoed [Bearer ***] back" if "Bearer" in form else "the server echoed [***] back"
    )


def test_a_urls_userinfo_is_known_in_its_http_basic_form() -> None:
    """``https://user:K@host`` makes the client send ``Authorization: Basic base64(user:K)``: a server
    that echoes it hands back a text holding neither ``K`` nor ``user:K``, yet it is the key."""
    key = "userinfo-planted-7301"
    basic = _b64(f"me:{key}")
    secrets = credential_values({"api_base": f"http://me:{key}@127.0.0.1:9/v1"})
    assert key in secrets
    assert scrub(f"you sent Basic {basic}", secrets) == "you sent Basic ***"
    # percent-encoded in the URL, sent decoded (as httpx and requests do)
    secrets = credential_values({"api_base": "http://me:p%40ss-planted-7302@127.0.0.1:9/v1"})
    assert scrub(f"Basic {_b64('me:p@ss-planted-7302')}", secrets) == "Basic ***"


def test_env_values_are_scrubbed_in_their_derived_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "env-derived-planted-7303")
    assert (
        redact_env(f"Authorization: Basic {_b64(':env-derived-planted-7303')}") == "Authorization: Basic ***"
    )


@given(cut=st.integers(min_value=1, max_value=30), data=st.data())
def test_a_stream_scrubber_catches_a_derived_form_split_across_pieces(cut: int, data: st.DataObject) -> None:
    basic = _b64(f":{KEY}")
    text = f"echo: Basic {basic} done"
    where = data.draw(st.integers(min_value=0, max_value=len(text)))
    scrubber = StreamScrubber([KEY])
    out = scrubber.feed(text[:where]) + scrubber.feed(text[where:]) + scrubber.flush()
    assert basic.rstrip("=") not in out and out.startswith("echo: Basic ***") and out.endswith(" done")


def test_the_shells_working_directory_is_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """``pwd`` names a credential in a URL (``?pwd=``), but the shell's ``PWD``/``OLDPWD`` are paths: as
    secrets they garbled every path in a log and held back every stream by a window."""
    from modelfactory.secrets import env_secret_values, redact_env

    monkeypatch.setenv("PWD", "/home/someone/project")
    monkeypatch.setenv("OLDPWD", "/home/someone/elsewhere")
    monkeypatch.setenv("DB_PWD", "hunter2-hunter2")
    values = env_secret_values()
    assert "hunter2-hunter2" in values and not {"/home/someone/project", "/home/someone/elsewhere"} & set(
        values
    )
    assert redact_env("cd /home/someone/project") == "cd /home/someone/project"
    assert "hunter2-hunter2" not in redact_env("pw hunter2-hunter2")
