"""The server-sent-events body of a streamed chat completion, from the model's stream of deltas.

Read top to bottom: :func:`stream_response` takes the first delta before the headers (a model that fails
at once gets a real status), then :class:`_ChatStream` turns each delta into chunks (content scrubbed of
secrets as it streams, a local model's JSON tool calls parsed out of its text, native tool-call deltas
scrubbed per call), and ends with what was held back, the finish chunk, the usage and ``[DONE]``.

Imported by :mod:`.routes`, once fastapi is known to be installed (this module imports it).
"""

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from ..messages import ChatMessageStreamDelta
from ..secrets import StreamScrubber, scrub_tree
from .protocol import DONE, StreamChunks, error_for, stream_finish_reason, stream_tool_calls
from .state import ServeState
from .toolstream import ToolCallStream

__all__ = ["stream_response"]


async def stream_response(
    state: ServeState,
    deltas: AsyncGenerator[ChatMessageStreamDelta, None],
    chunks: StreamChunks,
    max_tokens: int | None,
    calls: ToolCallStream | None = None,
) -> Any:
    """The ``StreamingResponse`` of ``deltas``, or the :class:`.protocol.HTTPError` of a model that fails
    before its first delta (raised here, before any header is sent)."""
    try:
        first: ChatMessageStreamDelta | None = await deltas.__anext__()
    except StopAsyncIteration:
        first = None
    except Exception as exc:
        await deltas.aclose()
        raise error_for(exc, state.is_local, state.redactor()) from None
    stream = _ChatStream(state, deltas, chunks, max_tokens, calls)
    return StreamingResponse(
        stream.body(first),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


class _ToolArguments:
    """Streamed tool calls' ``function.arguments``, each call (by its ``index``) through its own
    :class:`~modelfactory.secrets.StreamScrubber`: arguments arrive in pieces, and a key an upstream echoes
    into them may be split across two chunks."""

    def __init__(self, state: ServeState) -> None:
        self._state = state
        self._by_index: dict[Any, StreamScrubber] = {}

    def feed(self, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for call in calls:
            fn = call.get("function")
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                scrubber = self._by_index.get(call.get("index"))
                if scrubber is None:
                    scrubber = self._by_index[call.get("index")] = self._state.stream_scrubber()
                fn["arguments"] = scrubber.feed(fn["arguments"])
        return calls

    def flush(self) -> list[dict[str, Any]]:
        """The pieces held back, one delta per call that has some (sent before the finish chunk)."""
        out = []
        for index, scrubber in self._by_index.items():
            rest = scrubber.flush()
            if rest:
                out.append({"index": index, "function": {"arguments": rest}})
        return out


class _ChatStream:
    """One streamed reply: the chunks of each delta, then its ending.

    The content and each tool call's arguments are scrubbed as they stream, holding back a tail that could
    begin a key (an upstream that echoes its key may split it across two chunks); a local model's text is
    held back from its first ``{`` by ``calls`` (its tool calls, parsed at the end)."""

    def __init__(
        self,
        state: ServeState,
        deltas: AsyncGenerator[ChatMessageStreamDelta, None],
        chunks: StreamChunks,
        max_tokens: int | None,
        calls: ToolCallStream | None,
    ) -> None:
        self.state = state
        self.deltas = deltas
        self.chunks = chunks
        self.max_tokens = max_tokens
        self.calls = calls
        self.redact = state.redactor()
        self.content = state.stream_scrubber()
        self.arguments = _ToolArguments(state)
        self.usage: Any = None
        self.tool_calls = False  # whether a tool call went out: the finish reason says so

    async def body(self, first: ChatMessageStreamDelta | None) -> AsyncIterator[bytes]:
        """The whole event stream: the role chunk, each delta's chunks, the ending; an error after the
        headers becomes an error event, as OpenAI sends them. Closing it stops the generation."""
        try:
            yield self.chunks.chunk({"role": "assistant", "content": ""})
            for chunk in self._delta_chunks(first) if first is not None else []:
                yield chunk
            async for delta in self.deltas:
                for chunk in self._delta_chunks(delta):
                    yield chunk
            for chunk in self._ending():
                yield chunk
        except Exception as exc:
            for chunk in self._held_back():
                yield chunk
            yield self.chunks.error(error_for(exc, self.state.is_local, self.redact))
        finally:
            await self.deltas.aclose()
        yield DONE

    def _delta_chunks(self, delta: ChatMessageStreamDelta) -> list[bytes]:
        """The chunks of one delta: its text (less what is held back), then its native tool calls."""
        out = []
        if delta.token_usage is not None:
            self.usage = delta.token_usage
        text = delta.content or ""
        if text and self.calls is not None:
            text = self.calls.feed(text)
        text = self.content.feed(text) if text else ""
        if text:
            out.append(self.chunks.chunk({"content": text}))
        if delta.tool_calls:
            self.tool_calls = True
            native = self.arguments.feed(scrub_tree(stream_tool_calls(delta.tool_calls), self.redact))
            out.append(self.chunks.chunk({"tool_calls": native}))
        return out

    def _ending(self) -> list[bytes]:
        """After the last delta: the parsed tool calls, what the scrubbers held back, the finish chunk and
        the usage chunk (when asked for)."""
        out = self._parsed_tool_calls()
        out += self._held_back()
        out.append(self.chunks.chunk({}, stream_finish_reason(self.tool_calls, self.usage, self.max_tokens)))
        if self.chunks.include_usage:
            out.append(self.chunks.usage(self.usage))
        return out

    def _parsed_tool_calls(self) -> list[bytes]:
        """A local model's text held back from its first ``{``: the chunks of its tool calls, or of that
        text as content after all."""
        if self.calls is None:
            return []
        text, parsed = self.calls.finish()
        out = []
        if text and (text := self.content.feed(text)):
            out.append(self.chunks.chunk({"content": text}))
        for piece in parsed:
            calls = self.arguments.feed(scrub_tree(piece, self.redact))
            out.append(self.chunks.chunk({"tool_calls": calls}))
        self.tool_calls = self.tool_calls or bool(parsed)
        return out

    def _held_back(self) -> list[bytes]:
        """The chunks for what the scrubbers held back as a possible key's start (the key never came
        whole): the content's tail, then each tool call's arguments' tail."""
        out = []
        rest = self.content.flush()
        if rest:
            out.append(self.chunks.chunk({"content": rest}))
        held = self.arguments.flush()
        if held:
            out.append(self.chunks.chunk({"tool_calls": held}))
        return out
