"""ModelSpec: every problem at once, did-you-mean, declared-only env fallbacks, secrets never shown."""

from __future__ import annotations

from typing import ClassVar

import pytest
from omegaconf import OmegaConf
from pydantic import SecretStr

from modelfactory.errors import ConfigError, Problem
from modelfactory.settings import REDACTED, ModelSpec, env_field, redact_mapping, to_plain

SECRET = "sk-test-SECRET-0123456789"


class DemoSpec(ModelSpec):
    """A backend spec with env fallbacks, like the Azure/OpenAI ones."""

    endpoint: str = env_field(env="DEMO_ENDPOINT", description="where to send requests")
    api_key: SecretStr | None = env_field(None, env=("DEMO_API_KEY", "DEMO_FALLBACK_KEY"))
    region: str = "eu"


class CrossSpec(ModelSpec):
    lo: int = 0
    hi: int = 10

    def problems(self) -> list[Problem]:
        return [Problem("lo", "must be below hi", "lower lo")] if self.lo >= self.hi else []


def _problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return {p.key: p.problem for p in exc.value.problems}


# --------------------------------------------------------------------------- all problems at once


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        ModelSpec.from_kwargs(
            {
                "temperature": 3.5,
                "max_tokens": 0,
                "top_p": "lots",
                "temprature": 0.2,
                "supports_stop": "maybe",
            },
            owner="DemoModel",
        )
    problems = _problems(info)
    assert set(problems) == {"model_id", "temperature", "max_tokens", "top_p", "temprature", "supports_stop"}
    assert problems["model_id"] == "required but not set"
    assert "less than or equal to 2" in problems["temperature"]
    assert "(got 3.5)" in problems["temperature"]
    assert "greater than 0" in problems["max_tokens"]
    text = str(info.value)
    assert text.startswith("invalid DemoModel config: 6 problem(s)")
    assert all(p.source == "DemoModel" for p in info.value.problems)


def test_unknown_key_gets_did_you_mean_and_the_accepted_keys() -> None:
    with pytest.raises(ConfigError) as info:
        ModelSpec.from_kwargs({"model_id": "m", "max_token": 5}, owner="X")
    (problem,) = info.value.problems
    assert problem.key == "max_token"
    assert problem.problem == "unknown key, did you mean 'max_tokens'?"
    assert "X accepts:" in problem.fix
    for name in ("model_id", "max_tokens", "temperature", "generation_kwargs"):
        assert name in problem.fix


def test_unknown_key_without_a_close_match() -> None:
    with pytest.raises(ConfigError) as info:
        ModelSpec.from_kwargs({"model_id": "m", "qqqqqqqq": 1})
    assert info.value.problems[0].problem == "unknown key"


def test_hydra_keys_are_ignored() -> None:
    spec = ModelSpec.from_kwargs({"_target_": "x.Y", "_convert_": "all", "_partial_": False, "model_id": "m"})
    assert spec.model_id == "m"


def test_cross_field_problems_are_reported_with_the_owner() -> None:
    with pytest.raises(ConfigError) as info:
        CrossSpec.from_kwargs({"model_id": "m", "lo": 5, "hi": 1}, owner="Cross")
    assert info.value.problems == [Problem("lo", "must be below hi", "lower lo", "Cross")]
    assert CrossSpec.from_kwargs({"model_id": "m", "lo": 1, "hi": 5}).lo == 1


def test_missing_required_field_names_its_env_vars() -> None:
    with pytest.raises(ConfigError) as info:
        DemoSpec.from_kwargs({"model_id": "m"})
    (problem,) = info.value.problems
    assert problem.key == "endpoint"
    assert problem.fix == "set model.endpoint=... or the env var DEMO_ENDPOINT"


def test_omegaconf_values_become_plain() -> None:
    cfg = OmegaConf.create({"model_id": "m", "generation_kwargs": {"stop_after": [1, 2], "nested": {"a": 1}}})
    spec = ModelSpec.from_kwargs(cfg)
    assert spec.generation_kwargs == {"stop_after": [1, 2], "nested": {"a": 1}}
    assert type(spec.generation_kwargs) is dict
    assert type(spec.generation_kwargs["stop_after"]) is list
    assert to_plain({"a": (1, OmegaConf.create([2]))}) == {"a": [1, [2]]}


def test_generation_defaults_drop_unset_and_include_extras() -> None:
    spec = ModelSpec.from_kwargs(
        {"model_id": "m", "temperature": 0.0, "seed": 7, "generation_kwargs": {"top_k": 3}}
    )
    assert spec.generation_defaults() == {"temperature": 0.0, "seed": 7, "top_k": 3}


# --------------------------------------------------------------------------- env fallbacks


def test_declared_env_var_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENDPOINT", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("DEMO_API_KEY", SECRET)
    spec = DemoSpec.from_kwargs({"model_id": "m"})
    assert spec.endpoint == "http://127.0.0.1:9/v1"
    assert spec.api_key is not None
    assert spec.api_key.get_secret_value() == SECRET


def test_first_non_empty_env_var_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENDPOINT", "http://e")
    monkeypatch.setenv("DEMO_API_KEY", "")
    monkeypatch.setenv("DEMO_FALLBACK_KEY", "fallback-key")
    spec = DemoSpec.from_kwargs({"model_id": "m"})
    assert spec.api_key is not None
    assert spec.api_key.get_secret_value() == "fallback-key"


def test_explicit_kwarg_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENDPOINT", "http://from-env")
    spec = DemoSpec.from_kwargs({"model_id": "m", "endpoint": "http://explicit"})
    assert spec.endpoint == "http://explicit"


def test_null_in_config_means_use_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENDPOINT", "http://from-env")
    monkeypatch.setenv("DEMO_API_KEY", "env-key")
    spec = DemoSpec.from_kwargs({"model_id": "m", "endpoint": None, "api_key": None})
    assert spec.endpoint == "http://from-env"
    assert spec.api_key is not None and spec.api_key.get_secret_value() == "env-key"


def test_undeclared_env_vars_are_never_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MODEL_ID": "from-env",
        "model_id": "from-env",
        "TEMPERATURE": "1.5",
        "temperature": "1.5",
        "MAX_TOKENS": "9",
        "REGION": "us",
        "region": "us",
        "API_KEY": "leak",
        "api_key": "leak",
        "ENDPOINT": "http://generic",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        DemoSpec.from_kwargs({})
    assert {p.key for p in info.value.problems} == {"model_id", "endpoint"}
    monkeypatch.setenv("DEMO_ENDPOINT", "http://declared")
    spec = DemoSpec.from_kwargs({"model_id": "m"})
    assert spec.temperature is None
    assert spec.max_tokens is None
    assert spec.region == "eu"
    assert spec.api_key is None
    assert spec.endpoint == "http://declared"


def test_env_value_is_validated_like_a_kwarg(monkeypatch: pytest.MonkeyPatch) -> None:
    class PortSpec(ModelSpec):
        port: int = env_field(env="DEMO_PORT")

    monkeypatch.setenv("DEMO_PORT", "not-a-number")
    with pytest.raises(ConfigError) as info:
        PortSpec.from_kwargs({"model_id": "m"})
    assert [p.key for p in info.value.problems] == ["port"]
    monkeypatch.setenv("DEMO_PORT", "8080")
    assert PortSpec.from_kwargs({"model_id": "m"}).port == 8080


# --------------------------------------------------------------------------- secrets


def test_secret_never_in_repr_str_or_redacted() -> None:
    spec = DemoSpec.from_kwargs({"model_id": "m", "endpoint": "http://e", "api_key": SECRET})
    assert SECRET not in repr(spec)
    assert SECRET not in str(spec)
    red = spec.redacted()
    assert red["api_key"] == REDACTED
    assert SECRET not in repr(red)
    assert red["endpoint"] == "http://e"
    assert spec.secret_values() == [SECRET]


def test_redacted_covers_secret_looking_keys_in_nested_dicts() -> None:
    spec = ModelSpec.from_kwargs(
        {
            "model_id": "m",
            "max_tokens": 12,
            "generation_kwargs": {
                "extra_headers": {"Authorization": f"Bearer {SECRET}", "X-Trace": "t"},
                "max_new_tokens": 5,
                "provider_token": SECRET,
            },
        }
    )
    red = spec.redacted()
    assert SECRET not in repr(red)
    assert red["max_tokens"] == 12
    assert red["generation_kwargs"]["max_new_tokens"] == 5
    # every header but the public ones (Accept, OpenAI-Beta, ...) may be a credential, whatever its name:
    # masked by place, as secret_values() and the command-line refusal treat it (issue 16, item 4)
    assert red["generation_kwargs"]["extra_headers"] == {"Authorization": REDACTED, "X-Trace": REDACTED}
    assert red["generation_kwargs"]["provider_token"] == REDACTED


def test_redact_mapping_leaves_empty_secrets_visible_as_empty() -> None:
    assert redact_mapping({"api_key": None, "token": "", "x": [SecretStr("s"), SecretStr("")]}) == {
        "api_key": None,
        "token": "",
        "x": [REDACTED, ""],
    }


@pytest.mark.parametrize("bad_secret", [12345678901234, [SECRET], {"value": SECRET}, 3.14159])
def test_wrong_typed_secret_is_not_echoed(bad_secret: object) -> None:
    with pytest.raises(ConfigError) as info:
        DemoSpec.from_kwargs({"model_id": "m", "endpoint": "http://e", "api_key": bad_secret})
    text = str(info.value)
    assert [p.key for p in info.value.problems][0].startswith("api_key")
    assert str(bad_secret) not in text
    assert SECRET not in text
    assert "12345678901234" not in text
    assert "3.14159" not in text


def test_secret_under_a_misspelled_key_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        DemoSpec.from_kwargs({"model_id": "m", "endpoint": "http://e", "api_kye": SECRET})
    assert info.value.problems[0].problem == "unknown key, did you mean 'api_key'?"
    assert SECRET not in str(info.value)


def test_secret_not_echoed_when_other_fields_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_API_KEY", SECRET)
    with pytest.raises(ConfigError) as info:
        DemoSpec.from_kwargs({"model_id": "m", "temperature": 9})
    assert {p.key for p in info.value.problems} == {"endpoint", "temperature"}
    assert SECRET not in str(info.value)


def test_remote_api_class_var_says_which_specs_call_a_remote_api() -> None:
    """pricing and aliases sit below settings: they read ``remote_api`` instead of importing ApiSpec, so a
    spec declaring it (not only an ApiSpec subclass) gets smolagents' API-client names and a price."""
    from modelfactory.aliases import API, aliases_for
    from modelfactory.settings import ApiSpec

    assert ApiSpec.remote_api is True and ModelSpec.remote_api is False

    class RemoteSpec(ModelSpec):  # a user's own remote backend, not derived from ApiSpec
        remote_api: ClassVar[bool] = True

    assert set(API) <= set(aliases_for(RemoteSpec))
    assert not set(API) & set(aliases_for(DemoSpec))


def test_a_remote_api_spec_is_priced_from_the_map_and_a_local_one_is_not() -> None:
    from modelfactory.pricing import price_for

    pytest.importorskip("litellm")  # the price map is litellm's bundled file

    class RemoteSpec(ModelSpec):
        remote_api: ClassVar[bool] = True

    class LocalSpec(ModelSpec):
        pass

    assert price_for(RemoteSpec(model_id="gpt-4o")) is not None
    assert price_for(LocalSpec(model_id="gpt-4o")) is None  # local weights: no per-token price


# --------------------------------------------------------------------------- endpoint URLs


_ENDPOINTS = [  # (backend, its endpoint key, other kwargs it needs to be built)
    ("modelfactory.OpenAIServerModel", "api_base", {"model_id": "m", "api_key": "k"}),
    ("modelfactory.LiteLLMModel", "api_base", {"model_id": "openai/m"}),
    ("modelfactory.HfApiModel", "base_url", {"model_id": "m"}),
    (
        "modelfactory.AzureOpenAIServerModel",
        "azure_endpoint",
        {"model_id": "d", "api_key": "k", "api_version": "2024-10-21"},
    ),
]


@pytest.mark.parametrize(
    ("target", "key", "kwargs"), _ENDPOINTS, ids=[e[0].split(".")[1] for e in _ENDPOINTS]
)
@pytest.mark.parametrize(
    "url",
    [
        "http://",
        "https://",
        "http:///v1",
        "http://:8080/v1",
        "http://user@/v1",
        "ftp://h/v1",
        "127.0.0.1:8000",
        "",
    ],
)
def test_an_endpoint_url_without_a_host_is_refused(
    target: str, key: str, kwargs: dict[str, str], url: str
) -> None:
    from hydra.utils import get_class

    with pytest.raises(ConfigError) as info:
        get_class(target)(**{**kwargs, key: url})
    problems = _problems(info)
    assert list(problems) == [key] and "must be an http(s) URL with a host" in problems[key]


@pytest.mark.parametrize(
    ("target", "key", "kwargs"), _ENDPOINTS, ids=[e[0].split(".")[1] for e in _ENDPOINTS]
)
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1", "https://x.example", "http://[::1]:8080", "https://u:p@h.example/v1"]
)
def test_an_endpoint_url_with_a_host_is_accepted(
    target: str, key: str, kwargs: dict[str, str], url: str
) -> None:
    from hydra.utils import get_class

    model = get_class(target)(**{**kwargs, key: url})
    assert getattr(model.spec, key) == url
