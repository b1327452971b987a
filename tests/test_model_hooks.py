"""What the Model base declares for backends to override, and what callers read from it instead of
guessing from class names or ``sys.modules``."""

from __future__ import annotations

from typing import Any

import pytest

from modelfactory.backends.callable import CallableModel
from modelfactory.backends.fallback import FallbackModel
from modelfactory.backends.hf_inference import HfApiModel
from modelfactory.backends.litellm import LiteLLMModel
from modelfactory.backends.openai import OpenAIServerModel
from modelfactory.backends.transformers import TransformersModel
from modelfactory.model import Model, runs_locally


def echo(messages: Any, **kwargs: Any) -> str:
    return "ok"


@pytest.mark.parametrize(
    ("cls", "local"),
    [
        (Model, False),
        (TransformersModel, True),  # weights in this process
        (CallableModel, False),  # a user function: may call anything, may run concurrently
        (FallbackModel, False),
        (OpenAIServerModel, False),
        (HfApiModel, False),
        (LiteLLMModel, False),
    ],
)
def test_is_local_is_declared_per_backend(cls: type[Model], local: bool) -> None:
    assert cls.is_local is local


def test_runs_locally_reads_the_flag_of_anything() -> None:
    assert runs_locally(TransformersModel(model_id="builtin:tiny-llama")) is True  # no weights loaded
    assert runs_locally(CallableModel(fn=f"{__name__}.echo")) is False
    assert runs_locally(echo) is False  # a plain callable the runner was given

    class Says:
        def __init__(self, flag: Any) -> None:
            self.is_local = flag

    assert runs_locally(Says(True)) is True
    assert runs_locally(Says("yes")) is False  # only a real boolean counts


def test_hook_defaults() -> None:
    m = CallableModel(fn=f"{__name__}.echo")
    exc = RuntimeError("x")
    assert m._translate(exc) is exc  # unknown: the base class wraps it
    assert m._auth_hint() == ""
    assert m.load() is m
    assert "CallableModel" in m._endpoint()
