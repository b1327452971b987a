"""backends/_api.py: the failures every API backend translates alike, and the Model hooks it relies on."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from modelfactory.backends import _api as api
from modelfactory.backends._openai_wire import EmptyReplyError
from modelfactory.backends.openai import OpenAIServerModel
from modelfactory.model import Model

WHERE = "http://127.0.0.1:9/v1"


def model() -> OpenAIServerModel:
    return OpenAIServerModel(model_id="m", api_base=WHERE, api_key="sk-secret-value", timeout=7)


def test_status_errors_retry_by_status_and_hint_at_the_key() -> None:
    err = api.status_error(model(), 429, "slow down", {"Retry-After": "3"})
    assert (err.status, err.retryable, err.retry_after) == (429, True, 3.0)
    denied = api.status_error(model(), 401, "bad key sk-secret-value")
    assert not denied.retryable and "sk-secret-value" not in str(denied)
    assert model()._auth_hint() in str(denied)
    assert not api.status_error(model(), 400, "bad request").retryable


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (TimeoutError("slow"), "timed out after 7.0s (model.timeout)"),
        (ConnectionRefusedError("refused"), f"cannot connect to {WHERE}: refused"),
        (ConnectionResetError("reset"), f"connection to {WHERE} lost mid-reply: reset"),
        (EmptyReplyError("no choices"), "no choices"),
    ],
)
def test_transport_failures_are_retryable(exc: Exception, text: str) -> None:
    err = api.transport_error(model(), exc, WHERE)
    assert err is not None and err.retryable and text in str(err)
    assert err.backend == "OpenAIServerModel" and err.model_id == "m"


def test_anything_else_is_not_a_transport_failure() -> None:
    assert api.transport_error(model(), ValueError("x"), WHERE) is None


def test_shared_plumbing_only_uses_hooks_declared_on_model() -> None:
    """Every ``model.<name>`` that _api.py reads is declared on Model, so any backend can use it."""
    tree = ast.parse(Path(api.__file__).read_text(encoding="utf-8"))
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "model"
    }
    assert used >= {"_auth_hint", "_provider_error"}
    assert all(hasattr(Model, name) or name == "spec" for name in used), used
