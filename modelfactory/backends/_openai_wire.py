"""The OpenAI chat-completions wire format, shared by every backend that speaks it.

Kept apart from client/auth setup (OpenAI, Azure, HF InferenceClient differ only there).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from ..messages import (
    ChatMessage,
    ChatMessageStreamDelta,
    TokenLogprob,
    TokenUsage,
    ToolCall,
    ToolCallFunction,
    ToolCallFunctionDelta,
    ToolCallStreamDelta,
)
from ..model import GenerationRequest

# Parameters the openai SDK's ``create`` takes by name; anything else travels in ``extra_body``.
_NAMED = {
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "top_p",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "n",
    "user",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "service_tier",
    "metadata",
    "store",
}


def request_fields(req: GenerationRequest, *, stream: bool) -> dict[str, Any]:
    """The chat-completions fields a request sets beyond model, messages and params: stop (only when the
    provider takes it), response_format, tools, and streaming with usage in the last chunk."""
    fields: dict[str, Any] = {}
    if req.provider_stop:
        fields["stop"] = req.provider_stop
    if req.response_format is not None:
        fields["response_format"] = req.response_format
    if req.tools:
        fields["tools"] = req.tools
        if req.tool_choice is not None:
            fields["tool_choice"] = req.tool_choice
    if stream:
        fields["stream"] = True
        fields["stream_options"] = {"include_usage": True}
    return fields


# A per-call kwarg that is not a body field: the headers of this one request (the SDK's ``create`` takes it
# by this name). It rides along in the kwargs and in :func:`request_body`'s dict under this key, and
# each sender takes it out into the request's headers (:func:`post_chat`, ``_openai_http``).
EXTRA_HEADERS = "extra_headers"


def chat_kwargs(model_id: str, req: GenerationRequest, *, stream: bool) -> dict[str, Any]:
    """Keyword arguments for ``client.chat.completions.create`` (or :func:`post_chat`)."""
    kwargs: dict[str, Any] = {"model": model_id, "messages": req.messages}
    extra: dict[str, Any] = {}
    for key, value in req.params.items():
        if key == EXTRA_HEADERS:
            if value:
                kwargs[EXTRA_HEADERS] = {str(k): str(v) for k, v in dict(value).items()}
            continue
        (kwargs if key in _NAMED else extra)[key] = value
    kwargs.update(request_fields(req, stream=stream))
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def request_body(model_id: str, req: GenerationRequest, *, stream: bool) -> dict[str, Any]:
    """The JSON body of a chat-completions request (``extra_body`` merged in, as the SDK sends it), and
    the per-call headers under :data:`EXTRA_HEADERS` for the sender to take out (:func:`split_headers`)."""
    body = chat_kwargs(model_id, req, stream=stream)
    body.update(body.pop("extra_body", None) or {})
    return body


def split_headers(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``body`` without :data:`EXTRA_HEADERS`, and those headers: they go on the request, never in the
    JSON (a credential header sent as a body field reaches neither the server's auth nor a redaction)."""
    out = dict(body)
    headers = out.pop(EXTRA_HEADERS, None) or {}
    return out, {str(k): str(v) for k, v in dict(headers).items()}


def post_chat(client: Any, kwargs: dict[str, Any]) -> Any:
    """POST ``/chat/completions`` through the SDK's documented low-level ``client.post``.

    Same request, auth, Azure deployment routing, response types and error classes as
    ``client.chat.completions.create``, without importing the SDK's chat resource modules: that import
    alone is ~0.4 s of a cold start (measured with ``-X importtime``; see bench/cold_start.py).
    """
    from openai import Stream
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    body, headers = split_headers(kwargs)
    body.update(body.pop("extra_body", None) or {})
    return client.post(
        "/chat/completions",
        body=body,
        options={"headers": headers} if headers else {},
        cast_to=ChatCompletion,
        stream=bool(body.get("stream")),
        stream_cls=Stream[ChatCompletionChunk],
    )


async def apost_chat(client: Any, kwargs: dict[str, Any]) -> Any:
    """:func:`post_chat` on an ``AsyncOpenAI`` / ``AsyncAzureOpenAI`` client."""
    from openai import AsyncStream
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    body, headers = split_headers(kwargs)
    body.update(body.pop("extra_body", None) or {})
    return await client.post(
        "/chat/completions",
        body=body,
        options={"headers": headers} if headers else {},
        cast_to=ChatCompletion,
        stream=bool(body.get("stream")),
        stream_cls=AsyncStream[ChatCompletionChunk],
    )


def _parse_arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _tool_calls(raw_calls: Iterable[Any] | None) -> list[ToolCall] | None:
    if not raw_calls:
        return None
    return [
        ToolCall(
            id=str(getattr(tc, "id", "") or ""),
            function=ToolCallFunction(
                name=tc.function.name, arguments=_parse_arguments(tc.function.arguments)
            ),
        )
        for tc in raw_calls
    ]


def _read(obj: Any, key: str) -> Any:
    """``obj[key]`` or ``obj.key`` (a JSON dict, the SDK's object, litellm's), None when absent."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _count(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def usage_of(usage: Any) -> TokenUsage | None:
    """Token counts of a chat completion: ``prompt_tokens`` (every prompt token, cached ones included),
    ``completion_tokens``, and the cached part of the prompt: ``prompt_tokens_details.cached_tokens``
    (OpenAI, Azure, vLLM, ``modelfactory serve``; litellm fills it for every provider), else litellm's
    ``cache_read_input_tokens`` (its Anthropic usage keeps that name too); the reasoning part of the
    completion (``completion_tokens_details.reasoning_tokens``) and litellm's Anthropic cache writes
    (``cache_creation_input_tokens``)."""
    if usage is None:
        return None
    cached = _count(_read(_read(usage, "prompt_tokens_details"), "cached_tokens"))
    if not cached:
        cached = _count(_read(usage, "cache_read_input_tokens"))
    inp = _count(_read(usage, "prompt_tokens"))
    out = _count(_read(usage, "completion_tokens"))
    return TokenUsage(
        input_tokens=inp,
        output_tokens=out,
        cached_input_tokens=min(cached, inp),
        reasoning_tokens=min(
            _count(_read(_read(usage, "completion_tokens_details"), "reasoning_tokens")), out
        ),
        cache_write_input_tokens=min(
            _count(_read(usage, "cache_creation_input_tokens")), inp - min(cached, inp)
        ),
    )


class EmptyReplyError(ValueError):
    """The server answered 200 but with no choice to read."""


def parse_completion(response: Any) -> ChatMessage:
    choices = getattr(response, "choices", None)
    if not choices:
        raise EmptyReplyError("the server returned a reply with no choices")
    message = choices[0].message
    return ChatMessage(
        role="assistant",
        content=message.content,
        tool_calls=_tool_calls(getattr(message, "tool_calls", None)),
        token_usage=usage_of(getattr(response, "usage", None)),
        raw=response,
        # litellm (Anthropic thinking, Gemini thoughts), vLLM and DeepSeek return it beside the content
        reasoning_content=_text_or_none(getattr(message, "reasoning_content", None)),
        logprobs=logprobs_of(_read(choices[0], "logprobs")),
    )


def logprobs_of(logprobs: Any) -> list[TokenLogprob] | None:
    """OpenAI's ``choices[0].logprobs.content`` (token, logprob, top_logprobs) in our terms; None when the
    call did not ask for them."""
    content = _read(logprobs, "content")
    if not isinstance(content, list):
        return None
    out = []
    for item in content:
        top = [
            (str(_read(t, "token")), float(_read(t, "logprob"))) for t in _read(item, "top_logprobs") or []
        ]
        out.append(TokenLogprob(str(_read(item, "token")), float(_read(item, "logprob")), top))
    return out


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class ToolCallIndexer:
    """Gives each streamed tool call one ``index`` for the whole stream, whatever the provider numbers.

    OpenAI numbers parallel calls 0, 1, ... and names the call (``id``) on its first piece only; some
    providers (through litellm, TGI) send every call as index 0 with its own ``id``, or no index at all.
    A new ``id`` is a new call: it keeps the provider's index unless another call has it (then it gets
    the next free one); a piece without an ``id`` continues the call last seen at its provider index.
    So smolagents' ``agglomerate_stream_deltas`` (which merges by index) puts each call together apart
    from the others."""

    def __init__(self) -> None:
        self._by_id: dict[str, int] = {}
        self._by_index: dict[int, int] = {}

    def _fresh(self, wanted: int) -> int:
        used = set(self._by_id.values()) | set(self._by_index.values())
        return wanted if wanted not in used else max(used) + 1

    def piece(self, raw: Any, position: int) -> ToolCallStreamDelta:
        index = _read(raw, "index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else position
        call_id = _read(raw, "id") or None
        if call_id is not None:
            ours = self._by_id.get(call_id)
            if ours is None:
                ours = self._by_id[call_id] = self._fresh(index)
        else:
            ours = self._by_index.get(index)
            if ours is None:
                ours = self._fresh(index)
        self._by_index[index] = ours
        function = _read(raw, "function")
        arguments = _read(function, "arguments")
        if arguments is not None and not isinstance(arguments, str):
            arguments = json.dumps(arguments)  # a provider that sends the arguments as an object
        return ToolCallStreamDelta(
            index=ours,
            id=str(call_id) if call_id is not None else None,
            type=_read(raw, "type") or None,
            function=ToolCallFunctionDelta(name=_read(function, "name") or None, arguments=arguments),
        )


def delta_of(chunk: Any, calls: ToolCallIndexer | None = None) -> ChatMessageStreamDelta | None:
    """One stream chunk as a delta; None when it carries nothing (a role-only or empty chunk).
    ``calls``: the stream's :class:`ToolCallIndexer` (one per stream)."""
    usage = usage_of(getattr(chunk, "usage", None))
    choices = getattr(chunk, "choices", None) or []
    content = None
    tool_calls = None
    if choices:
        delta = choices[0].delta
        content = getattr(delta, "content", None)
        raw_calls = getattr(delta, "tool_calls", None)
        if raw_calls:
            calls = calls if calls is not None else ToolCallIndexer()
            tool_calls = [calls.piece(raw, i) for i, raw in enumerate(raw_calls)]
    if content or tool_calls or usage:
        return ChatMessageStreamDelta(content=content or "", tool_calls=tool_calls, token_usage=usage)
    return None


def iter_stream(chunks: Iterable[Any]) -> Iterator[ChatMessageStreamDelta]:
    calls = ToolCallIndexer()
    for chunk in chunks:
        delta = delta_of(chunk, calls)
        if delta is not None:
            yield delta


async def aiter_stream(chunks: AsyncIterable[Any]) -> AsyncIterator[ChatMessageStreamDelta]:
    calls = ToolCallIndexer()
    async for chunk in chunks:
        delta = delta_of(chunk, calls)
        if delta is not None:
            yield delta
