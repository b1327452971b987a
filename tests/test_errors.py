"""The exception hierarchy: one base class, the standard bases users already catch, readable texts."""

from __future__ import annotations

import pytest

from modelfactory.errors import (
    BackendError,
    ConfigError,
    MessageError,
    MissingDependencyError,
    ModelFactoryError,
    Problem,
    UnsupportedFeatureError,
    did_you_mean,
)


@pytest.mark.parametrize(
    ("cls", "std_base"),
    [
        (ConfigError, ValueError),
        (MessageError, ValueError),
        (UnsupportedFeatureError, ValueError),
        (MissingDependencyError, ImportError),
        (BackendError, RuntimeError),
    ],
)
def test_every_error_derives_from_the_base_and_a_standard_class(cls: type, std_base: type) -> None:
    assert issubclass(cls, ModelFactoryError)
    assert issubclass(cls, std_base)


def test_problem_str_with_source_and_fix() -> None:
    p = Problem(key="temperature", problem="must be <= 2", fix="lower it", source="OpenAIServerModel")
    assert str(p) == "[OpenAIServerModel] temperature: must be <= 2 (fix: lower it)"


def test_problem_str_without_source_or_fix() -> None:
    assert str(Problem(key="model_id", problem="required")) == "model_id: required"


def test_config_error_lists_every_problem() -> None:
    problems = [Problem("a", "bad a", "fix a"), Problem("b", "bad b"), Problem("c", "bad c", source="X")]
    err = ConfigError(problems, title="invalid thing")
    text = str(err)
    assert text.splitlines()[0] == "invalid thing: 3 problem(s)"
    assert text.splitlines()[1:] == ["  - a: bad a (fix: fix a)", "  - b: bad b", "  - [X] c: bad c"]
    assert err.problems == problems
    assert err.title == "invalid thing"


def test_config_error_from_a_plain_string() -> None:
    err = ConfigError("something is off")
    assert err.problems == [Problem(key="config", problem="something is off")]
    assert str(err) == "invalid model config: 1 problem(s)\n  - config: something is off"


def test_missing_dependency_names_the_extra() -> None:
    err = MissingDependencyError("litellm", "litellm", "LiteLLMModel")
    assert err.package == "litellm"
    assert err.extra == "litellm"
    assert "LiteLLMModel needs the 'litellm' package" in str(err)
    assert "pip install 'modelfactory[litellm]'" in str(err)


def test_backend_error_fields_and_text() -> None:
    err = BackendError(
        "rate limited", model_id="gpt-4o", backend="OpenAIServerModel", status=429, retryable=True
    )
    assert str(err) == "OpenAIServerModel model 'gpt-4o' failed (HTTP 429): rate limited"
    assert (err.model_id, err.backend, err.status, err.retryable) == (
        "gpt-4o",
        "OpenAIServerModel",
        429,
        True,
    )
    assert err.provider_message == "rate limited"


def test_backend_error_without_context() -> None:
    err = BackendError("boom")
    assert str(err) == "model failed: boom"
    assert err.status is None
    assert err.retryable is False


def test_one_except_clause_catches_everything() -> None:
    caught = []
    for exc in (
        ConfigError("x"),
        MessageError("x"),
        UnsupportedFeatureError("x"),
        MissingDependencyError("p", "e", "B"),
        BackendError("x"),
    ):
        try:
            raise exc
        except ModelFactoryError as e:
            caught.append(type(e))
    assert len(caught) == 5


def test_did_you_mean() -> None:
    assert did_you_mean("temprature", ["temperature", "top_p"]) == "did you mean 'temperature'?"
    assert did_you_mean("zzzzzz", ["temperature", "top_p"]) == ""
    assert did_you_mean("anything", []) == ""
