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


@pytest.mark.parametrize(
    "exc", [TimeoutError("slow"), ConnectionRefusedError("refused"), ConnectionResetError("reset")]
)
def test_the_plain_http_path_says_what_the_sdk_paths_say(exc: Exception) -> None:
    """OpenAI/Azure over plain HTTP (_openai_http) raise its Failure with the messages written here."""
    from modelfactory.backends import _openai_http as http

    route = http.Route(url=f"{WHERE}/chat/completions", where=WHERE, timeout=7.0)
    failure = http._transport_failure(route, exc, started=True)
    err = api.transport_error(model(), exc, WHERE)
    assert failure is not None and err is not None
    assert failure.retryable and failure.status is None and failure.message in str(err)
    before = http._transport_failure(route, ConnectionResetError("reset"), started=False)
    assert (
        before is not None
        and before.message == f"connection to {WHERE} lost before the reply was complete: reset"
    )


def test_the_transport_messages_are_written_once() -> None:
    """No copy of them in _openai_http.py: a wording changes in _api.py alone."""
    from modelfactory.backends import _openai_http as http

    texts = [
        node.value
        for node in ast.walk(ast.parse(Path(http.__file__).read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    assert not [t for t in texts if "cannot connect" in t or "timed out" in t or "lost " in t]
