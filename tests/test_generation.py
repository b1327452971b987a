"""Generation parameters are checked in one place (:mod:`modelfactory.generation`): every bad key at once,
named, before anything reaches a model; the runner uses the same check for per-call kwargs."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelfactory import CallableModel
from modelfactory.errors import ConfigError
from modelfactory.generation import SEED_MAX, generation_problems, validate_generation
from modelfactory.runner import run_items

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
