"""Plumbing shared by the backends that call a remote API (OpenAI, Azure, HF Inference, LiteLLM).

Each SDK raises its own exception classes, but the failures mean the same everywhere: an HTTP status
(retryable for 429, 408 and 5xx, with the provider's ``Retry-After``, and a hint about the key on
401/403), a timeout, a connection refused or lost mid-reply, or a 200 with no choice in it. Each
backend's ``_translate`` recognises its SDK's classes and builds the error here, so the messages and the
retry decision are written once. Private: the backends' own business, not an API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import BackendError
from ..model import Model
from ..retry import (
    is_connect_error,
    is_retryable_status,
    is_timeout_error,
    is_transport_error,
    parse_retry_after,
)
from ._openai_wire import EmptyReplyError

__all__ = [
    "async_client_args",
    "connect_message",
    "lost_message",
    "reserved_params",
    "status_error",
    "timeout_error",
    "timeout_message",
    "transport_error",
    "transport_message",
]


def status_error(model: Model, status: int, message: str, headers: Any = None) -> BackendError:
    """The provider answered with an error status: retryable by status only, ``Retry-After`` honoured,
    and on 401/403 the model's hint about where its key comes from."""
    if status in (401, 403):
        message += model._auth_hint()
    return model._provider_error(
        message,
        status=status,
        retryable=is_retryable_status(status),
        retry_after=parse_retry_after(headers),
    )


def timeout_error(model: Model) -> BackendError:
    """One request ran past ``model.timeout`` (retryable, like a 5xx)."""
    return model._provider_error(timeout_message(getattr(model.spec, "timeout", None)), retryable=True)


def transport_error(model: Model, exc: BaseException, where: str) -> BackendError | None:
    """A network failure of httpx/httpx2/sockets (a timeout, a connection refused, a connection lost
    mid-reply) or a reply with no choice: all retryable. None for anything else."""
    message = transport_message(exc, where, getattr(model.spec, "timeout", None))
    if message is not None:
        return model._provider_error(message, retryable=True)
    if isinstance(exc, EmptyReplyError):
        return model._provider_error(str(exc), retryable=True)
    return None


# The messages of transport failures, written once: the SDK paths above and the plain-HTTP path of
# OpenAI/Azure (_openai_http, which has no model at hand and raises them as its Failure) say the same.


def timeout_message(timeout: Any) -> str:
    return f"timed out after {timeout}s (model.timeout)"


def connect_message(where: str, exc: BaseException) -> str:
    return f"cannot connect to {where}: {exc}"


def lost_message(where: str, exc: BaseException, *, started: bool = True) -> str:
    """A connection lost after it was opened: ``started``, once part of the reply had arrived."""
    return f"connection to {where} lost {'mid-reply' if started else 'before the reply was complete'}: {exc}"


def transport_message(exc: BaseException, where: str, timeout: Any, *, started: bool = True) -> str | None:
    """The message of a network failure of httpx/httpx2/sockets (each one retryable), None for anything
    else. A protocol error of the reply counts as a lost connection, whether or not it is a TransportError
    (h11's own RemoteProtocolError is not)."""
    if is_timeout_error(exc):
        return timeout_message(timeout)
    if is_connect_error(exc):
        return connect_message(where, exc)
    if is_transport_error(exc) or "RemoteProtocolError" in {c.__name__ for c in type(exc).__mro__}:
        return lost_message(where, exc, started=started)
    return None


def reserved_params(params: Mapping[str, Any], reserved: frozenset[str]) -> list[str]:
    """The generation parameters a backend sets itself (sorted), which a config or a call may not pass."""
    return sorted(k for k in params if k in reserved)


def async_client_args(args: dict[str, Any]) -> dict[str, Any]:
    """Client args for an SDK's async client: a sync ``http_client`` from ``client_kwargs`` is for the sync
    client only (give ``async_http_client`` for the async one)."""
    args = dict(args)
    sync_http = args.pop("http_client", None)
    async_http = args.pop("async_http_client", None)
    if async_http is not None:
        args["http_client"] = async_http
    elif type(sync_http).__name__ == "AsyncClient":  # httpx's or httpx2's, judged without importing
        args["http_client"] = sync_http  # httpx: ~0.2 s of a cold start, with the rich/click it pulls in
    return args
