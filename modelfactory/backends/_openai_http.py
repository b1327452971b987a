"""The chat-completions call of OpenAI and Azure over plain HTTP (httpx2, or httpx), without the openai SDK.

Why: ``import openai`` is most of a cold start: ~1 s of CPU with openai 3.57 (``openai.types`` 0.7 s, the
vendored aiohttp transport 0.3 s; ``python -X importtime``), more than Hydra, pydantic and modelfactory
together, while one POST of a JSON body needs none of it. httpx2 (what openai >= 3 itself sends with;
httpx for older releases) costs ~0.1 s. See bench/cold_start.py.

What the SDK did for this one request is done here, the same way: ``Authorization: Bearer <key>``
(``OpenAI-Organization`` / ``OpenAI-Project`` when set), Azure's
``/openai/deployments/<deployment>/chat/completions?api-version=...`` with ``api-key`` (or an Entra ID
token, or a token provider's), ``client_kwargs`` ``default_headers`` / ``default_query`` /
``http_client`` / ``async_http_client``, the proxy and CA settings of the environment (``HTTPS_PROXY``,
``SSL_CERT_FILE``), and server-sent events for streams. Every failure leaves as one :class:`Failure`
(status, the provider's message, retryable by status and exception class, ``Retry-After``), which the
model turns into its ``BackendError``. Any other ``client_kwargs`` key is a setting of the SDK client
only: the model then calls through the SDK (:data:`HTTP_CLIENT_ARGS`).

Replies are :class:`JSONObject`: the server's JSON as a dict that also reads like the SDK's objects
(``reply.raw["choices"][0]`` and ``reply.raw.choices[0].finish_reason`` both work).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import MissingDependencyError
from ..retry import is_retryable_status, parse_retry_after
from ._api import transport_message
from ._openai_wire import split_headers

__all__ = [
    "HTTP_CLIENT_ARGS",
    "Failure",
    "JSONObject",
    "Route",
    "apost",
    "astream",
    "new_client",
    "post",
    "stream",
]

# client_kwargs this module honours; any other one is for the SDK's client (the model then uses the SDK).
HTTP_CLIENT_ARGS = frozenset(
    {
        "default_headers",
        "default_query",
        "http_client",
        "async_http_client",
        "organization",
        "project",
        "azure_ad_token",
        "azure_ad_token_provider",
    }
)
_USER_AGENT = "modelfactory (OpenAI-compatible chat completions)"


class JSONObject(dict):  # type: ignore[type-arg]
    """A JSON object that also reads by attribute, as the SDK's response objects do."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def model_dump(self) -> dict[str, Any]:
        return json.loads(json.dumps(self))


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return JSONObject({k: _wrap(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class Failure(Exception):
    """One failed request, classified: the model turns it into its ``BackendError``."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass
class Route:
    """Where one chat-completions request goes, and with what."""

    url: str  # the full .../chat/completions URL
    where: str  # the endpoint, for messages
    timeout: float
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    token_provider: Callable[[], Any] | None = None  # Azure: a fresh bearer token for each request
    auth_hint: str = ""  # appended to a 401/403's message


def http_library() -> Any:
    """httpx2 where installed (openai >= 3 depends on it), else httpx (older openai releases)."""
    try:
        import httpx2

        return httpx2
    except ImportError:
        try:
            import httpx
        except ImportError:
            raise MissingDependencyError("openai", "openai", "OpenAIServerModel") from None
        return httpx


def new_client(*, is_async: bool) -> Any:
    """A pooled client that reads the environment's proxy and CA settings, as the SDK's does."""
    lib = http_library()
    return (lib.AsyncClient if is_async else lib.Client)(follow_redirects=True, verify=_ssl_context(lib))


_SSL_CONTEXTS: dict[tuple[Any, ...], Any] = {}
_SSL_LOCK = threading.Lock()


def _ssl_context(lib: Any) -> Any:
    """The CA-verifying SSL context every client of this process shares (``True``: the library's own).

    Why: building one loads the CA bundle, ~80 ms of CPU, and an async client is made per event loop (a
    pool cannot outlive its loop): every ``asyncio.run`` and every async ``run_items`` paid it again. An
    ``ssl.SSLContext`` is safe to share. Built as the library builds it (``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` honoured), and again when either of them, or the file or folder it names, changes.
    """
    create = getattr(lib, "create_ssl_context", None)
    if create is None:
        return True
    key: tuple[Any, ...] = (lib.__name__,)
    for var in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        where = os.environ.get(var)
        try:
            stamp = os.stat(where).st_mtime_ns if where else None
        except OSError:
            stamp = None
        key += (where, stamp)
    with _SSL_LOCK:
        ctx = _SSL_CONTEXTS.get(key)
        if ctx is None:
            ctx = _SSL_CONTEXTS[key] = create()
    return ctx


def _headers(route: Route, token: Any) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": _USER_AGENT, **route.headers}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _provider_message(status: int, text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str) and err:
            return err
    text = text.strip()
    return text[:500] if text else f"HTTP {status}"


def _status_failure(route: Route, status: int, headers: Any, text: str) -> Failure:
    message = _provider_message(status, text)
    if status in (401, 403):
        message += route.auth_hint
    return Failure(message, status, is_retryable_status(status), parse_retry_after(headers))


def _transport_failure(route: Route, exc: BaseException, *, started: bool) -> Failure | None:
    message = transport_message(exc, route.where, route.timeout, started=started)
    return None if message is None else Failure(message, retryable=True)


def _parse(route: Route, text: str) -> Any:
    try:
        return _wrap(json.loads(text))
    except ValueError as exc:
        raise Failure(
            f"the server's reply is not a valid chat completion ({type(exc).__name__}: {exc})"
        ) from None


_DONE = object()


def _event(route: Route, line: str) -> Any:
    """One server-sent event line: the chunk it carries, ``None`` for anything else, or ``_DONE`` at
    ``[DONE]``. An ``error`` event is a failure, as the SDK raises it."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return _DONE
    chunk = _parse(route, data)
    if isinstance(chunk, dict) and chunk.get("error"):
        err = chunk["error"]
        message = err.get("message") if isinstance(err, dict) else err
        raise Failure(f"the server sent an error mid-stream: {message}")
    return chunk


class _Call:
    """What the four senders share, written once: the request's arguments, the status check, the reply's
    JSON, the server-sent events, and every failure turned into one :class:`Failure` (a transport failure
    after the first chunk is "lost", not "refused": ``started``)."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.started = False

    def args(self, body: Mapping[str, Any], token: Any) -> dict[str, Any]:
        json_body, extra = split_headers(body)  # a call's extra_headers are headers, not a JSON field
        return {
            "headers": {**_headers(self.route, token), **extra},
            "params": self.route.params or None,
            "json": json_body,
            "timeout": self.route.timeout,
        }

    @contextlib.contextmanager
    def failures(self) -> Iterator[None]:
        try:
            yield
        except Failure:
            raise
        except Exception as exc:
            failure = _transport_failure(self.route, exc, started=self.started)
            if failure is None:
                raise
            raise failure from exc

    def check(self, response: Any, text: str) -> None:
        if response.status_code >= 400:
            raise _status_failure(self.route, response.status_code, response.headers, text)

    def reply(self, response: Any, text: str) -> Any:
        self.check(response, text)
        return _parse(self.route, text)

    def event(self, line: str) -> Any:
        chunk = _event(self.route, line)
        self.started = self.started or (chunk is not None and chunk is not _DONE)
        return chunk


def _token(route: Route) -> Any:
    return route.token_provider() if route.token_provider is not None else None


async def _atoken(route: Route) -> Any:
    token = _token(route)
    return await token if inspect.isawaitable(token) else token


def post(client: Any, route: Route, body: Mapping[str, Any]) -> Any:
    """POST one chat completion; the reply's JSON."""
    call = _Call(route)
    with call.failures():
        response = client.post(route.url, **call.args(body, _token(route)))
        text = response.text
    return call.reply(response, text)


async def apost(client: Any, route: Route, body: Mapping[str, Any]) -> Any:
    """:func:`post` on an async client."""
    call = _Call(route)
    with call.failures():
        response = await client.post(route.url, **call.args(body, await _atoken(route)))
        text = response.text
    return call.reply(response, text)


def stream(client: Any, route: Route, body: Mapping[str, Any]) -> Iterator[Any]:
    """POST a streamed chat completion; yields each chunk's JSON. Closing the iterator ends the request."""
    call = _Call(route)
    with call.failures(), client.stream("POST", route.url, **call.args(body, _token(route))) as response:
        if response.status_code >= 400:
            response.read()
            call.check(response, response.text)
        for line in response.iter_lines():
            chunk = call.event(line)
            if chunk is _DONE:
                return
            if chunk is not None:
                yield chunk


async def astream(client: Any, route: Route, body: Mapping[str, Any]) -> AsyncGenerator[Any, None]:
    """:func:`stream` on an async client."""
    call = _Call(route)
    with call.failures():
        async with client.stream("POST", route.url, **call.args(body, await _atoken(route))) as response:
            if response.status_code >= 400:
                await response.aread()
                call.check(response, response.text)
            async for line in response.aiter_lines():
                chunk = call.event(line)
                if chunk is _DONE:
                    return
                if chunk is not None:
                    yield chunk
