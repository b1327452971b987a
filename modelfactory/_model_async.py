"""The asyncio half of the call contract: ``agenerate`` / ``agenerate_stream`` (and their retry policy
and rate limit, awaited so the event loop is never blocked), inherited by :class:`modelfactory.model.Model`.

The same contract as the sync calls, over the same hooks: the request is built, the response cache
looked up, the stops trimmed and the stream shaped exactly as ``generate`` / ``generate_stream`` do. Kept
apart so that model.py holds one path of the contract, the hooks and the errors; a backend still
overrides only ``_agenerate`` / ``_agenerate_stream``, declared (with their defaults) on ``Model``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .cache import StreamRecorder, replay_deltas
from .errors import BackendError, ModelFactoryError
from .messages import ChatMessage, ChatMessageStreamDelta, GenerationRequest, StreamShaper, trim_at_stop
from .retry import acall_with_retry

if TYPE_CHECKING:
    from .ratelimit import RateLimiter
    from .settings import ModelSpec

T = TypeVar("T")

__all__ = ["AsyncCalls"]


class AsyncCalls:
    """``Model``'s asyncio methods. Not a base of its own: it reads the hooks ``Model`` defines."""

    if TYPE_CHECKING:  # what Model defines (mypy checks that its definitions match these)
        spec: ModelSpec
        _limiter: RateLimiter | None

        def _request(
            self,
            messages: Any,
            stop_sequences: Any,
            grammar: Any,
            response_format: Any,
            tools_to_call_from: Any,
            kwargs: dict[str, Any],
        ) -> GenerationRequest: ...
        def _cache_lookup(self, req: GenerationRequest) -> ChatMessage | None: ...
        def _cache_store(self, req: GenerationRequest, reply: ChatMessage) -> None: ...
        def _cache_recorder(self, req: GenerationRequest) -> StreamRecorder | None: ...
        async def _agenerate(self, req: GenerationRequest) -> ChatMessage: ...
        def _agenerate_stream(self, req: GenerationRequest) -> AsyncIterator[ChatMessageStreamDelta]: ...
        def _broken_stream_error(self, exc: Exception) -> Exception: ...
        def _backend_error(self, exc: Exception) -> BackendError: ...

    async def agenerate(
        self,
        messages: Any,
        stop_sequences: list[str] | None = None,
        response_format: Any = None,
        tools_to_call_from: list[Any] | None = None,
        grammar: Any = None,
        **kwargs: Any,
    ) -> ChatMessage:
        """:meth:`generate` for asyncio: same contract, awaiting the backend's async client (or the sync
        call in a worker thread for backends that have none), retry waits and rate limit included."""
        req = self._request(messages, stop_sequences, grammar, response_format, tools_to_call_from, kwargs)
        cached = self._cache_lookup(req)  # the same response cache as generate
        if cached is not None:
            return cached
        reply = await self._awith_policy(lambda: self._agenerate(req))
        if reply.content is not None and req.stop_sequences:
            reply.content = trim_at_stop(reply.content, req.stop_sequences)
        self._cache_store(req, reply)
        return reply

    async def agenerate_stream(
        self,
        messages: Any,
        stop_sequences: list[str] | None = None,
        response_format: Any = None,
        tools_to_call_from: list[Any] | None = None,
        grammar: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatMessageStreamDelta]:
        """:meth:`generate_stream` for asyncio (``async for delta in model.agenerate_stream(...)``)."""
        req = self._request(messages, stop_sequences, grammar, response_format, tools_to_call_from, kwargs)
        cached = self._cache_lookup(req)
        if cached is not None:
            for replayed in replay_deltas(cached):
                yield replayed
            return
        shaper = StreamShaper(req.stop_sequences, self._cache_recorder(req))
        # The policy covers the stream's start only: once a delta came, a failure is final.
        stream, first = await self._awith_policy(lambda: self._aopen_stream(req))
        try:
            pending = list(first)
            while True:
                if pending:
                    delta = pending.pop()
                else:
                    try:
                        delta = await stream.__anext__()
                    except StopAsyncIteration:
                        break
                shaped = shaper.shape(delta)
                if shaped is not None:
                    yield shaped
            tail = shaper.finish()
            if tail is not None:
                yield tail
        except Exception as exc:
            err = self._broken_stream_error(exc)
            if err is exc:
                raise
            raise err from exc
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()  # a consumer that stops early ends the backend's stream

    async def _aopen_stream(
        self, req: GenerationRequest
    ) -> tuple[AsyncIterator[ChatMessageStreamDelta], list[ChatMessageStreamDelta]]:
        stream = self._agenerate_stream(req).__aiter__()
        try:
            return stream, [await stream.__anext__()]
        except StopAsyncIteration:
            return stream, []

    async def _awith_policy(self, fn: Callable[[], Awaitable[T]]) -> T:
        """:meth:`_with_policy` for coroutines: ``asyncio.sleep`` between retries, ``aacquire`` for the
        rate limit, so the event loop is never blocked."""

        async def attempt() -> T:
            try:
                return await fn()
            except ModelFactoryError:
                raise
            except Exception as exc:
                raise self._backend_error(exc) from exc

        limiter = getattr(self, "_limiter", None)

        async def acquire() -> None:
            if limiter is not None:
                await limiter.aacquire()

        return await acall_with_retry(attempt, self.spec.retry, before_attempt=acquire)
