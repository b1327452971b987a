"""OpenAI's Responses API (``POST /v1/responses``): the endpoint some OpenAI models are served on only,
with the same call contract as :class:`~modelfactory.backends.openai.OpenAIServerModel` (its spec, auth,
retries and errors; only the wire format differs).

Reasoning goes as ``reasoning={"effort", "summary": "auto"}``; the summary comes back as
``ChatMessage.reasoning_content``. Not yet: streaming, batch mode, the SDK client path.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from ..errors import UnsupportedFeatureError
from ..messages import (
    ChatMessage,
    ChatMessageStreamDelta,
    TokenUsage,
    ToolCall,
    ToolCallFunction,
    trim_at_stop,
)
from ..model import GenerationRequest
from . import _openai_http as http
from ._openai_transport import HTTPTransport, OpenAITransport
from ._openai_wire import _count, _read
from .openai import OPENAI_BASE, OpenAIServerModel

__all__ = ["OpenAIResponsesModel", "response_body", "parse_response"]

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
    """The JSON body of a Responses API request."""
    body: dict[str, Any] = {"model": model_id, "input": _input(req.messages)}
    for key, value in req.params.items():
        if key == "reasoning_effort":
            body["reasoning"] = {"effort": value, "summary": "auto"}
        elif key != "extra_headers":
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
    """The Responses API takes no ``stop``: the reply is cut at the first stop sequence here."""
    if reply.content and req.stop_sequences:
        reply.content = trim_at_stop(reply.content, req.stop_sequences)
    return reply


class OpenAIResponsesModel(OpenAIServerModel):
    """OpenAI's Responses API, over plain HTTP (non-streaming)."""

    def _choose_transport(self) -> OpenAITransport:
        return HTTPTransport(self._route, self.spec.client_kwargs, self._http_error)  # no SDK path yet

    def _route(self) -> http.Route:
        route = super()._route()
        base = (self.spec.api_base or OPENAI_BASE).rstrip("/")
        return dataclasses.replace(route, url=f"{base}/responses")

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        try:
            reply = parse_response(self._transport.post(response_body(self.model_id, req)))
        except http.Failure as exc:
            raise self._http_error(exc) from exc
        return _trimmed(reply, req)

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        raise UnsupportedFeatureError("OpenAIResponsesModel does not stream yet; call it without streaming")

    async def _agenerate(self, req: GenerationRequest) -> ChatMessage:
        try:
            reply = await self._transport.apost(response_body(self.model_id, req))
            return _trimmed(parse_response(reply), req)
        except http.Failure as exc:
            raise self._http_error(exc) from exc
