"""How an OpenAI-compatible model sends its requests: one transport, chosen once when the model is built.

One small interface, :class:`OpenAITransport`, and its two implementations:

- :class:`HTTPTransport`: plain HTTP (:mod:`._openai_http`), no ``import openai`` (~1 s less cold start);
  what every model uses unless its ``client_kwargs`` hold a setting only the SDK's client knows;
- :class:`SDKTransport`: the openai SDK's client (the model's ``client`` / ``aclient``), for those.

Each takes the JSON body of a request (:func:`._openai_wire.request_body`, the call's headers inside under
``extra_headers``) and hands back the reply's JSON, or its chunks; :meth:`OpenAITransport.error` turns a
failure of its own into the model's ``BackendError`` (anything else comes back unchanged). The model's
four call methods are then written once, whatever the transport (see ``OpenAIServerModel``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol

from . import _openai_http as http
from . import _openai_wire as wire

__all__ = ["HTTPTransport", "OpenAITransport", "SDKTransport", "uses_sdk"]


def uses_sdk(client_kwargs: dict[str, Any]) -> bool:
    """True when ``client_kwargs`` hold a setting only the SDK's client knows (then it sends the calls)."""
    return bool(set(client_kwargs) - http.HTTP_CLIENT_ARGS)


class OpenAITransport(Protocol):
    """Sends one request body: a reply, or a stream of chunks (closing the stream ends the request)."""

    def post(self, body: dict[str, Any]) -> Any: ...

    def stream(self, body: dict[str, Any]) -> Iterator[Any]: ...

    async def apost(self, body: dict[str, Any]) -> Any: ...

    def astream(self, body: dict[str, Any]) -> AsyncGenerator[Any, None]: ...

    def error(self, exc: Exception) -> Exception: ...


class HTTPTransport:
    """Plain HTTP to the route the model names for each call, on one pooled client (an async one per event
    loop: a pool cannot outlive the loop that opened it); a client given in ``client_kwargs`` is used as is.
    """

    def __init__(
        self,
        route: Callable[[], http.Route],
        client_kwargs: Mapping[str, Any],
        error: Callable[[Exception], Exception],
    ) -> None:
        self._route = route
        self._given = client_kwargs
        self._error = error

    @functools.cached_property
    def client(self) -> Any:
        """The sync HTTP client (made on first use)."""
        given = self._given.get("http_client")
        if given is not None and type(given).__name__ != "AsyncClient":
            return given
        return http.new_client(is_async=False)

    @property
    def aclient(self) -> Any:
        """The async HTTP client of the running event loop."""
        given = self._given.get("async_http_client")
        if given is None and type(self._given.get("http_client")).__name__ == "AsyncClient":
            given = self._given["http_client"]
        if given is not None:
            return given
        loop = asyncio.get_running_loop()
        cached = self.__dict__.get("_aclient")
        if cached is None or cached[0] is not loop:
            cached = self.__dict__["_aclient"] = (loop, http.new_client(is_async=True))
        return cached[1]

    def post(self, body: dict[str, Any]) -> Any:
        return http.post(self.client, self._route(), body)

    def stream(self, body: dict[str, Any]) -> Iterator[Any]:
        return http.stream(self.client, self._route(), body)

    async def apost(self, body: dict[str, Any]) -> Any:
        return await http.apost(self.aclient, self._route(), body)

    def astream(self, body: dict[str, Any]) -> AsyncGenerator[Any, None]:
        return http.astream(self.aclient, self._route(), body)

    def error(self, exc: Exception) -> Exception:
        """A :class:`~._openai_http.Failure`, or a reply with no choices, as the model's error."""
        return self._error(exc) if isinstance(exc, (http.Failure, wire.EmptyReplyError)) else exc


class _SDKOwner(Protocol):
    """What the SDK transport needs of its model: its clients, and its translation of the SDK's errors."""

    @property
    def client(self) -> Any: ...

    @property
    def aclient(self) -> Any: ...

    def _translate(self, exc: Exception) -> Exception: ...


class SDKTransport:
    """The openai SDK's clients (the model's ``client`` and ``aclient``, built on first use), through its
    low-level ``post`` (:func:`._openai_wire.post_chat` by default; the Responses API passes its own
    pair, which posts to ``/responses``); its exceptions translated by the model."""

    def __init__(
        self,
        model: _SDKOwner,
        *,
        post: Callable[[Any, dict[str, Any]], Any] = wire.post_chat,
        apost: Callable[[Any, dict[str, Any]], Awaitable[Any]] = wire.apost_chat,
    ) -> None:
        self._model = model
        self._post = post
        self._apost = apost

    def post(self, body: dict[str, Any]) -> Any:
        return self._post(self._model.client, body)

    def stream(self, body: dict[str, Any]) -> Iterator[Any]:
        return iter(self._post(self._model.client, body))

    async def apost(self, body: dict[str, Any]) -> Any:
        return await self._apost(self._model.aclient, body)

    async def astream(self, body: dict[str, Any]) -> AsyncGenerator[Any, None]:
        chunks = await self._apost(self._model.aclient, body)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.close()  # an abandoned stream releases its connection

    def error(self, exc: Exception) -> Exception:
        return self._model._translate(exc)
