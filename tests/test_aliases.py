"""smolagents' constructor names: every one is accepted with its meaning, or refused saying why.

The parameter lists come from smolagents' installed constructors (``inspect.signature``), so a name a new
smolagents release adds fails here until it is classified.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import modelfactory
from modelfactory.aliases import GENERATION_PARAMS
from modelfactory.errors import ConfigError
from modelfactory.factory import config_warnings
from tests.servers.recording import RecordingServer

smolagents = pytest.importorskip("smolagents")

REPO = Path(__file__).resolve().parents[1]
LOCAL = "http://127.0.0.1:9/v1"
REFUSED = "refused"

# Our class for each smolagents class, and what it needs besides the name under test.
PAIRS: dict[str, tuple[str, dict[str, Any]]] = {
    "TransformersModel": ("TransformersModel", {"model_id": "builtin:tiny-llama"}),
    "InferenceClientModel": ("InferenceClientModel", {"model_id": "org/m"}),
    "LiteLLMModel": ("LiteLLMModel", {"model_id": "anthropic/claude-3-5-sonnet-latest"}),
    "OpenAIServerModel": ("OpenAIServerModel", {"model_id": "gpt-4o", "api_key": "sk-base"}),
    "OpenAIModel": ("OpenAIModel", {"model_id": "gpt-4o", "api_key": "sk-base"}),
    "AzureOpenAIServerModel": (
        "AzureOpenAIServerModel",
        {
            "model_id": "dep",
            "azure_endpoint": "https://r.openai.azure.com",
            "api_key": "k",
            "api_version": "v",
        },
    ),
    "AzureOpenAIModel": (
        "AzureOpenAIModel",
        {
            "model_id": "dep",
            "azure_endpoint": "https://r.openai.azure.com",
            "api_key": "k",
            "api_version": "v",
        },
    ),
}


def _secret(value: Any) -> Any:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def _key(spec: Any) -> Any:
    return _secret(getattr(spec, "token", None) or getattr(spec, "api_key", None))


# A sample value for every smolagents parameter, and what our spec must then hold (or REFUSED).
SAMPLES: dict[str, tuple[Any, Callable[[Any], bool] | str]] = {
    "model_id": ("org/other-model", lambda s: s.model_id == "org/other-model"),
    "device_map": ("cpu", lambda s: s.device == "cpu"),
    "torch_dtype": ("float32", lambda s: s.dtype == "float32"),
    "trust_remote_code": (True, lambda s: s.trust_remote_code is True),
    "model_kwargs": (
        {"attn_implementation": "eager"},
        lambda s: s.model_kwargs["attn_implementation"] == "eager",
    ),
    "max_new_tokens": (64, lambda s: s.max_new_tokens == 64),
    "max_tokens": (32, lambda s: s.max_tokens == 32),
    "apply_chat_template_kwargs": ({"enable_thinking": False}, lambda s: s.apply_chat_template_kwargs),
    "flatten_messages_as_text": (True, lambda s: s.flatten_messages_as_text is True),
    "tool_name_key": ("function", REFUSED),
    "tool_arguments_key": ("args", REFUSED),
    "custom_role_conversions": (
        {"system": "user"},
        lambda s: s.custom_role_conversions == {"system": "user"},
    ),
    "client": (object(), REFUSED),
    "requests_per_minute": (30.0, lambda s: s.requests_per_minute == 30.0),
    "retry": (False, lambda s: s.retry.max_attempts == 1),
    "provider": ("together", lambda s: s.provider == "together"),
    "token": ("hf_sample", lambda s: _secret(s.token) == "hf_sample"),
    "timeout": (30, lambda s: s.timeout == 30),
    "client_kwargs": (
        {"default_query": {"a": "1"}},
        lambda s: s.client_kwargs["default_query"] == {"a": "1"},
    ),
    "api_key": ("sk-sample", lambda s: _key(s) == "sk-sample"),
    "bill_to": ("my-org", lambda s: s.bill_to == "my-org"),
    "base_url": (LOCAL, lambda s: (getattr(s, "base_url", None) or s.api_base) == LOCAL),
    "api_base": (LOCAL, lambda s: (getattr(s, "api_base", None) or s.base_url) == LOCAL),
    "organization": (
        "org-1",
        lambda s: getattr(s, "organization", None) == "org-1" or s.client_kwargs["organization"] == "org-1",
    ),
    "project": (
        "proj-1",
        lambda s: getattr(s, "project", None) == "proj-1" or s.client_kwargs["project"] == "proj-1",
    ),
    "azure_endpoint": (
        "https://other.openai.azure.com",
        lambda s: s.azure_endpoint.startswith("https://other"),
    ),
    "api_version": ("2024-10-21", lambda s: s.api_version == "2024-10-21"),
}
# What differs per class: Azure takes no full base URL (only azure_endpoint).
OVERRIDES: dict[tuple[str, str], str] = {
    ("AzureOpenAIServerModel", "api_base"): REFUSED,
    ("AzureOpenAIModel", "api_base"): REFUSED,
}


def smolagents_parameters(cls: type) -> list[str]:
    """Every name ``cls(...)`` takes: its own ``__init__``'s, and its parents' while ``**kwargs`` is passed up."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += [
            p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


CASES = [(theirs, name) for theirs in PAIRS for name in smolagents_parameters(getattr(smolagents, theirs))]


def test_every_smolagents_parameter_is_classified() -> None:
    missing = sorted({name for _, name in CASES} - set(SAMPLES))
    assert not missing, f"smolagents takes {missing}: accept them (modelfactory/aliases.py) or refuse them"
    assert len(CASES) > 40  # the introspection found the constructors' parameters


@pytest.mark.parametrize(("theirs", "name"), CASES, ids=[f"{t}.{n}" for t, n in CASES])
def test_smolagents_parameter_is_accepted_or_refused(theirs: str, name: str) -> None:
    ours, base = PAIRS[theirs]
    cls = getattr(modelfactory, ours)
    value, expect = SAMPLES[name]
    expect = OVERRIDES.get((theirs, name), expect)
    kwargs = {**base, name: value}
    if expect == REFUSED:
        with pytest.raises(ConfigError) as info:
            cls(**kwargs)
        (problem,) = [p for p in info.value.problems if p.key == name]
        assert "not supported" in problem.problem and problem.fix
        return
    model = cls(**kwargs)
    assert callable(expect) and expect(model.spec), (
        f"{ours}({name}={value!r}) does not mean what it means in smolagents"
    )


@pytest.mark.parametrize("theirs", sorted(PAIRS))
def test_same_class_names_as_smolagents(theirs: str) -> None:
    """`from smolagents import X` -> `from modelfactory import X`: every name exists, main argument first."""
    ours = getattr(modelfactory, PAIRS[theirs][0])
    assert ours.__name__ in modelfactory.__all__ or theirs in modelfactory.__all__
    params = list(inspect.signature(ours).parameters.values())
    assert params[0].name == "model_id" and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


def test_none_means_not_set_as_in_smolagents() -> None:
    model = modelfactory.TransformersModel(
        "builtin:tiny-llama", device_map=None, torch_dtype=None, model_kwargs=None, max_tokens=None
    )
    assert (model.spec.device, model.spec.dtype, model.spec.model_kwargs) == ("auto", "auto", {})
    hf = modelfactory.InferenceClientModel(model_id=None, client_kwargs=None, client=None, token=None)
    assert hf.spec.model_id == "meta-llama/Llama-3.3-70B-Instruct"


def test_generation_kwargs_smolagents_forwards_go_to_generation_kwargs() -> None:
    model = modelfactory.LiteLLMModel(
        "openai/o3-mini", frequency_penalty=0.5, top_k=3, reasoning_effort="low"
    )
    assert model.spec.generation_kwargs == {"frequency_penalty": 0.5, "top_k": 3}
    assert model.spec.reasoning_effort == "low"  # a setting of its own now, checked per model (issue 26)
    assert {"frequency_penalty", "presence_penalty", "top_k", "repetition_penalty"} <= GENERATION_PARAMS
    with pytest.raises(ConfigError) as info:  # a typo is still a typo
        modelfactory.LiteLLMModel("openai/gpt-4o", frequency_penalti=0.5)
    assert "did you mean" in str(info.value)


def test_alias_and_its_canonical_name_together_is_one_problem_among_all() -> None:
    with pytest.raises(ConfigError) as info:
        modelfactory.TransformersModel(
            "builtin:tiny-llama", device_map="cpu", device="cpu", torch_dtype="float64", temperature=9
        )
    keys = sorted(p.key for p in info.value.problems)
    assert keys == ["device_map", "temperature", "torch_dtype"]
    text = str(info.value)
    assert "means the same as device" in text and "float64" in text and "not supported" in text


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"device_map": {"": 0}}, "per-module device_map is not supported"),
        ({"device_map": "balanced"}, "several devices"),
        ({"torch_dtype": "float64"}, "float64"),
    ],
)
def test_transformers_values_we_cannot_honour_say_so(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        modelfactory.TransformersModel("builtin:tiny-llama", **kwargs)
    assert words in str(info.value)


def test_torch_values_are_taken() -> None:
    torch = pytest.importorskip("torch")
    model = modelfactory.TransformersModel(
        "builtin:tiny-llama", device_map=torch.device("cpu"), torch_dtype=torch.bfloat16
    )
    assert (model.spec.device, model.spec.dtype) == ("cpu", "bfloat16")


def test_litellm_flattens_text_only_providers_as_smolagents_does() -> None:
    assert modelfactory.LiteLLMModel("ollama/llama3").spec.flatten_messages_as_text is True
    assert (
        modelfactory.LiteLLMModel(
            "ollama/llama3", flatten_messages_as_text=False
        ).spec.flatten_messages_as_text
        is False
    )
    assert modelfactory.LiteLLMModel("anthropic/claude").spec.flatten_messages_as_text is False


@pytest.mark.server
def test_hf_api_key_alias_reaches_the_wire(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    model = modelfactory.InferenceClientModel(
        "org/m", base_url=recording_server.url, api_key="tok-alias-123456"
    )
    assert model([{"role": "user", "content": "hi"}]).content
    assert recording_server.last.headers["authorization"] == "Bearer tok-alias-123456"


@pytest.mark.server
def test_openai_base_url_alias_reaches_the_wire(recording_server: RecordingServer) -> None:
    model = modelfactory.OpenAIModel(
        "m", base_url=f"{recording_server.url}/v1", api_key="sk-x", frequency_penalty=0.25
    )
    model([{"role": "user", "content": "hi"}])
    assert recording_server.last.path == "/v1/chat/completions"
    assert recording_server.last.body["frequency_penalty"] == 0.25


def test_check_warns_on_an_alias_in_a_config(tmp_path: Path) -> None:
    from modelfactory.backends.transformers import TransformersSpec

    node = {
        "_target_": "TransformersModel",
        "model_id": "builtin:tiny-llama",
        "device_map": "cpu",
        "top_k": 4,
    }
    warnings = config_warnings(node, TransformersSpec, "conf/model/x.yaml")
    assert [(w.key, w.fix) for w in warnings] == [
        ("device_map", "write device"),
        ("top_k", "write generation_kwargs.top_k"),
    ]

    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "config.yaml").write_text("defaults:\n  - model: tiny\n  - _self_\n")
    (conf / "model" / "tiny.yaml").write_text(
        "_target_: modelfactory.TransformersModel\nmodel_id: builtin:tiny-llama\ntorch_dtype: float32\n"
    )
    import contextlib
    import io

    from modelfactory.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--config-dir", str(conf), "check", "model=tiny"])  # the shipped ones are seen too
    assert code == 0, out.getvalue()  # a warning, not a problem
    assert "warning" in out.getvalue() and "torch_dtype" in out.getvalue() and "write dtype" in out.getvalue()
