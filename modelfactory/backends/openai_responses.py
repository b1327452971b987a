"""OpenAI's Responses API (``POST /v1/responses``): the endpoint some OpenAI models are served on only,
with the same call contract as :class:`~modelfactory.backends.openai.OpenAIServerModel` (its spec, auth,
retries and errors; only the wire format differs).

Reasoning goes as ``reasoning={"effort", "summary": "auto"}``; the summary comes back as
``ChatMessage.reasoning_content``.

Streams are the API's typed server-sent events (``response.output_text.delta``,
``response.output_item.added`` + ``response.function_call_arguments.delta`` for a function call,
``response.completed`` with the usage), turned into the same :class:`ChatMessageStreamDelta` s as the chat
backend's (:class:`StreamReader`): text pieces, tool-call pieces shaped as smolagents merges them (the
name and ``call_id`` on a call's first piece, then argument fragments, one ``index`` per call), the usage
last. The requests go through the model's transport, chosen once at build as for the chat backend: plain
HTTP, or the SDK's client (``client.post("/responses", ...)``) when ``client_kwargs`` need it. Batch mode
is OpenAI's Batch API with ``/v1/responses`` as its endpoint (:meth:`OpenAIResponsesModel.batch_adapter`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

from .._batchapi import BatchAdapter
from ..messages import (
    ChatMessage,
    ChatMessageStreamDelta,
    TokenUsage,
    ToolCall,
    ToolCallFunction,
    ToolCallFunctionDelta,
    ToolCallStreamDelta,
    trim_at_stop,
)
from ..model import GenerationRequest
from . import _openai_http as http
from ._openai_transport import HTTPTransport, OpenAITransport, SDKTransport, uses_sdk
from ._openai_wire import EXTRA_HEADERS, _count, _read, split_headers
from .openai import OPENAI_BASE, OpenAIServerModel

__all__ = [
    "OpenAIResponsesModel",
    "StreamReader",
    "iter_events",
    "parse_response",
    "response_body",
]

_RENAMED = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens"}


def _tool(schema: dict[str, Any]) -> dict[str, Any]:
    """A chat-completions tool schema in the Responses API's flat form."""
    fn = schema.get("function") or {}
    return {
        "type": "function",
        "name": fn.get("name"),
        "description": fn.get("description"),
        "parameters": fn.get("parameters") or {},
    }


def _input(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m["role"]
        if m.get("tool_calls"):
            for call in m["tool_calls"]:
                fn = call["function"]
                args = fn["arguments"]
                out.append(
                    {
                        "type": "function_call",
                        "call_id": call["id"],
                        "name": fn["name"],
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    }
                )
        elif role == "tool":
            out.append(
                {"type": "function_call_output", "call_id": m.get("tool_call_id"), "output": m["content"]}
            )
        else:
            out.append({"role": role, "content": m["content"]})
    return out


def response_body(model_id: str, req: GenerationRequest) -> dict[str, Any]:
    """The JSON body of a Responses API request (the call's headers under ``extra_headers``, for the
    sender to take out, as ``_openai_wire.request_body`` leaves them)."""
    body: dict[str, Any] = {"model": model_id, "input": _input(req.messages)}
    for key, value in req.params.items():
        if key == "reasoning_effort":
            body["reasoning"] = {"effort": value, "summary": "auto"}
        elif key == EXTRA_HEADERS:  # this call's headers: the sender takes them out of the body
            if value:
                body[EXTRA_HEADERS] = {str(k): str(v) for k, v in dict(value).items()}
        else:
            body[_RENAMED.get(key, key)] = value
    if req.response_format is not None:
        schema = req.response_format.get("json_schema") if isinstance(req.response_format, dict) else None
        body["text"] = {"format": {"type": "json_schema", **schema} if schema else {"type": "json_object"}}
    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
        if req.tool_choice is not None:
            body["tool_choice"] = req.tool_choice
    return body


def parse_response(response: Any) -> ChatMessage:
    """A Responses API reply as a :class:`ChatMessage`: output text, function calls, reasoning summary."""
    text, summary, calls = [], [], []
    for item in _read(response, "output") or []:
        kind = _read(item, "type")
        if kind == "message":
            text += [
                _read(c, "text") or ""
                for c in _read(item, "content") or []
                if _read(c, "type") == "output_text"
            ]
        elif kind == "reasoning":
            summary += [_read(s, "text") or "" for s in _read(item, "summary") or []]
        elif kind == "function_call":
            raw = _read(item, "arguments")
            try:
                args = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError:
                args = raw
            calls.append(
                ToolCall(
                    id=str(_read(item, "call_id")), function=ToolCallFunction(str(_read(item, "name")), args)
                )
            )
    usage = _read(response, "usage")
    n_in, n_out = _count(_read(usage, "input_tokens")), _count(_read(usage, "output_tokens"))
    details = _read(usage, "input_tokens_details")
    cached = min(_count(_read(details, "cached_tokens")), n_in)
    token_usage = (
        TokenUsage(
            n_in,
            n_out,
            cached_input_tokens=cached,
            reasoning_tokens=min(
                _count(_read(_read(usage, "output_tokens_details"), "reasoning_tokens")), n_out
            ),
            cache_write_input_tokens=min(_count(_read(details, "cache_write_tokens")), n_in - cached),
        )
        if usage is not None
        else None
    )
    return ChatMessage(
        role="assistant",
        content="".join(text) if text or not calls else None,
        tool_calls=calls or None,
        token_usage=token_usage,
        raw=response,
        reasoning_content="\n".join(summary) or None,
    )


def _trimmed(reply: ChatMessage, req: GenerationRequest) -> ChatMessage:
    """The Responses API takes no ``stop``: the reply is cut at the first stop sequence here (a stream is
    cut by the model's stream shaper, as every backend's)."""
    if reply.content and req.stop_sequences:
        reply.content = trim_at_stop(reply.content, req.stop_sequences)
    return reply


def _failure(event: Any, what: str) -> http.Failure:
    """A stream's ``error`` event, or the error of its ``response.failed``, as a failure of the request
    (the model's retry policy decides on it as on any other: only before the stream's first delta)."""
    err = _read(_read(event, "response"), "error") if what == "failed" else event
    code = _read(err, "code")
    message = str(_read(err, "message") or f"the response {what}")
    return http.Failure(
        f"the server sent an error mid-stream: {message}" + (f" ({code})" if code else ""),
        retryable=code in ("server_error", "rate_limit_exceeded"),
    )


class StreamReader:
    """The events of one Responses API stream as :class:`ChatMessageStreamDelta` s.

    - ``response.output_text.delta``: a content piece;
    - ``response.output_item.added`` of a ``function_call`` item: the call's first piece (its index in
      this reply, ``call_id``, ``type="function"``, the name); ``response.function_call_arguments.delta``:
      an argument fragment of the call at that ``output_index``; a server that sends the arguments only
      whole (``response.output_item.done``) gets them sent then;
    - ``response.reasoning_summary_text.delta``: a piece of ``reasoning_content``;
    - ``response.completed`` / ``response.incomplete``: the usage, last;
    - ``error`` / ``response.failed``: a :class:`~._openai_http.Failure`.
    Anything else (created, in_progress, part added/done, ...) carries nothing new and gives ``None``.
    """

    def __init__(self) -> None:
        self._calls: dict[int, int] = {}  # output_index -> the call's index among this reply's calls
        self._sent: set[int] = set()  # calls whose arguments came in fragments

    def _call(self, output_index: Any) -> int:
        key = output_index if isinstance(output_index, int) else -1
        if key not in self._calls:
            self._calls[key] = len(self._calls)
        return self._calls[key]

    def delta(self, event: Any) -> ChatMessageStreamDelta | None:
        kind = _read(event, "type")
        if kind == "response.output_text.delta":
            return ChatMessageStreamDelta(content=str(_read(event, "delta") or ""))
        if kind == "response.reasoning_summary_text.delta":
            return _reasoning_delta(str(_read(event, "delta") or ""))
        if kind in ("response.output_item.added", "response.output_item.done"):
            return self._item(event, added=kind.endswith("added"))
        if kind == "response.function_call_arguments.delta":
            index = self._call(_read(event, "output_index"))
            self._sent.add(index)
            piece = ToolCallStreamDelta(
                index=index, function=ToolCallFunctionDelta(arguments=str(_read(event, "delta") or ""))
            )
            return ChatMessageStreamDelta(content="", tool_calls=[piece])
        if kind in ("response.completed", "response.incomplete"):
            usage = parse_response(_read(event, "response")).token_usage
            return ChatMessageStreamDelta(content="", token_usage=usage) if usage is not None else None
        if kind == "error":
            raise _failure(event, "error")
        if kind == "response.failed":
            raise _failure(event, "failed")
        return None

    def _item(self, event: Any, *, added: bool) -> ChatMessageStreamDelta | None:
        item = _read(event, "item")
        if _read(item, "type") != "function_call":
            return None
        index = self._call(_read(event, "output_index"))
        arguments = _read(item, "arguments") or None
        if added:
            piece = ToolCallStreamDelta(
                index=index,
                id=str(_read(item, "call_id") or "") or None,
                type="function",
                function=ToolCallFunctionDelta(name=_read(item, "name") or None, arguments=arguments),
            )
            if arguments:
                self._sent.add(index)
        elif index in self._sent or not arguments:
            return None
        else:  # the arguments only whole, at the item's end
            self._sent.add(index)
            piece = ToolCallStreamDelta(index=index, function=ToolCallFunctionDelta(arguments=arguments))
        return ChatMessageStreamDelta(content="", tool_calls=[piece])


def _reasoning_delta(text: str) -> ChatMessageStreamDelta | None:
    """A piece of the reasoning summary: a delta of its own, never in ``content``."""
    return ChatMessageStreamDelta(content="", reasoning_content=text) if text else None


def iter_events(events: Iterable[Any]) -> Iterator[ChatMessageStreamDelta]:
    """A Responses API stream's events (JSON dicts, or the SDK's event objects) as deltas."""
    reader = StreamReader()
    for event in events:
        delta = reader.delta(event)
        if delta is not None:
            yield delta


async def aiter_events(events: AsyncIterable[Any]) -> AsyncIterator[ChatMessageStreamDelta]:
    """:func:`iter_events` over an async stream."""
    reader = StreamReader()
    async for event in events:
        delta = reader.delta(event)
        if delta is not None:
            yield delta


def post_responses(client: Any, body: dict[str, Any]) -> Any:
    """POST ``/responses`` through the SDK's low-level ``client.post``: the SDK's types, auth and errors,
    a ``Stream`` of typed events when ``body["stream"]`` (see ``_openai_wire.post_chat``)."""
    from openai import Stream
    from openai.types.responses import Response, ResponseStreamEvent

    body, headers = split_headers(body)
    return client.post(
        "/responses",
        body=body,
        options={"headers": headers} if headers else {},
        cast_to=Response,
        stream=bool(body.get("stream")),
        stream_cls=Stream[ResponseStreamEvent],
    )


async def apost_responses(client: Any, body: dict[str, Any]) -> Any:
    """:func:`post_responses` on an ``AsyncOpenAI`` client."""
    from openai import AsyncStream
    from openai.types.responses import Response, ResponseStreamEvent

    body, headers = split_headers(body)
    return await client.post(
        "/responses",
        body=body,
        options={"headers": headers} if headers else {},
        cast_to=Response,
        stream=bool(body.get("stream")),
        stream_cls=AsyncStream[ResponseStreamEvent],
    )


def batch_line_body(model_id: str, req: GenerationRequest) -> dict[str, Any]:
    """A Batch API line's body: the request's body without per-call headers (a line has none)."""
    return split_headers(response_body(model_id, req))[0]


def batch_reply(body: Any) -> ChatMessage:
    """A Batch API output line's ``response.body``: a Responses API reply, read as the SDK's type."""
    from openai.types.responses import Response

    return parse_response(Response.model_validate(body))


class OpenAIResponsesModel(OpenAIServerModel):
    """OpenAI's Responses API: plain HTTP, or the SDK's client when ``client_kwargs`` need it; streams."""

    def batch_adapter(self) -> BatchAdapter:
        """OpenAI's Batch API with ``/v1/responses`` as the endpoint and each line's url (not the chat
        completions' one this class would inherit)."""
        from ._openai_batch import OpenAIBatches

        return OpenAIBatches(self, url="/v1/responses", body=batch_line_body, parse=batch_reply)

    def _choose_transport(self) -> OpenAITransport:
        if uses_sdk(self.spec.client_kwargs):
            return SDKTransport(self, post=post_responses, apost=apost_responses)
        return HTTPTransport(self._route, self.spec.client_kwargs, self._http_error)

    def _route(self) -> http.Route:
        route = super()._route()
        base = (self.spec.api_base or OPENAI_BASE).rstrip("/")
        return dataclasses.replace(route, url=f"{base}/responses")

    def _body(self, req: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        body = response_body(self.model_id, req)
        if stream:
            body["stream"] = True
        return body

    def _parse_reply(self, raw: Any, req: GenerationRequest) -> ChatMessage:
        return _trimmed(parse_response(raw), req)

    def _parse_stream(self, chunks: Iterable[Any]) -> Iterator[ChatMessageStreamDelta]:
        return iter_events(chunks)

    def _aparse_stream(self, chunks: AsyncIterable[Any]) -> AsyncIterator[ChatMessageStreamDelta]:
        return aiter_events(chunks)
