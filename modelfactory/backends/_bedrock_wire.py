"""Bedrock's Converse API shapes <-> ours: OpenAI-shaped messages in, ``ChatMessage`` / deltas out.

Converse differs from OpenAI's chat format: system prompts go in their own ``system`` list, turns must
alternate user/assistant (consecutive turns of one role are merged into one), content is a list of
blocks (``{"text"}``, ``{"image"}``, ``{"toolUse"}``, ``{"toolResult"}``), stop sequences and sampling
parameters go in ``inferenceConfig``, and tools in ``toolConfig``. Private to the Bedrock backend.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from ..errors import MessageError
from ..messages import (
    ChatMessage,
    ChatMessageStreamDelta,
    GenerationRequest,
    TokenUsage,
    ToolCall,
    ToolCallFunction,
    ToolCallFunctionDelta,
    ToolCallStreamDelta,
)

__all__ = ["converse_request", "iter_converse_stream", "parse_converse"]

# our generation parameters -> Converse's inferenceConfig keys
_INFERENCE_KEYS = {"max_tokens": "maxTokens", "temperature": "temperature", "top_p": "topP"}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def _image_block(url: str) -> dict[str, Any]:
    """A data URL -> Converse's image block (bytes); Bedrock fetches no URL."""
    head, sep, data = url.partition(",")
    if not (url.startswith("data:") and sep and head.endswith(";base64")):
        raise MessageError(
            "AmazonBedrockModel: image parts must be base64 data URLs (Bedrock fetches no URL)"
        )
    mime = head[5:].split(";")[0]
    return {"image": {"format": _IMAGE_FORMATS.get(mime, "png"), "source": {"bytes": base64.b64decode(data)}}}


def _blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    content = msg.get("content")
    if msg["role"] == "tool":
        text = content if isinstance(content, str) else json.dumps(content)
        return [{"toolResult": {"toolUseId": str(msg.get("tool_call_id", "")), "content": [{"text": text}]}}]
    out: list[dict[str, Any]] = []
    if isinstance(content, str):
        if content:
            out.append({"text": content})
    elif isinstance(content, list):
        for part in content:
            if part["type"] == "text":
                out.append({"text": part["text"]})
            else:
                out.append(_image_block(part["image_url"]["url"]))
    for call in msg.get("tool_calls") or []:
        function = call.get("function", {}) if isinstance(call, dict) else {}
        args = function.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                args = {"input": args}
        out.append(
            {
                "toolUse": {
                    "toolUseId": str(call.get("id", "")),
                    "name": function.get("name"),
                    "input": args or {},
                }
            }
        )
    return out


def _tool_config(req: GenerationRequest) -> dict[str, Any]:
    tools = []
    for schema in req.tools or []:
        fn = schema.get("function", schema)
        spec = {"name": fn["name"], "inputSchema": {"json": fn.get("parameters") or {"type": "object"}}}
        if fn.get("description"):
            spec["description"] = fn["description"]
        tools.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": tools}
    choice = req.tool_choice
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif isinstance(choice, dict) and "function" in choice:
        config["toolChoice"] = {"tool": {"name": choice["function"]["name"]}}
    return config


def converse_request(model_id: str, req: GenerationRequest, extra: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``client.converse`` / ``converse_stream`` for ``req``: stops in
    ``inferenceConfig.stopSequences`` (smolagents leaves them out), other parameters in
    ``additionalModelRequestFields``; ``extra`` (the config's ``converse_kwargs``) merged under ours."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for msg in req.messages:
        if msg["role"] == "system":
            system += [b for b in _blocks(msg) if "text" in b]
            continue
        role = "assistant" if msg["role"] == "assistant" else "user"
        blocks = _blocks(msg)
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += blocks  # Converse wants alternating turns
        else:
            messages.append({"role": role, "content": blocks})
    kwargs: dict[str, Any] = {**extra, "modelId": model_id, "messages": messages}
    if system:
        kwargs["system"] = system
    inference = dict(extra.get("inferenceConfig") or {})
    additional = dict(extra.get("additionalModelRequestFields") or {})
    for key, value in req.params.items():
        if key in _INFERENCE_KEYS:
            inference[_INFERENCE_KEYS[key]] = value
        elif key != "seed":  # Converse has no seed
            additional[key] = value
    if req.provider_stop:
        inference["stopSequences"] = list(req.provider_stop)
    if inference:
        kwargs["inferenceConfig"] = inference
    if additional:
        kwargs["additionalModelRequestFields"] = additional
    if req.tools:
        kwargs["toolConfig"] = _tool_config(req)
    return kwargs


def _usage(data: Any) -> TokenUsage | None:
    if not isinstance(data, dict):
        return None
    return TokenUsage(
        int(data.get("inputTokens") or 0),
        int(data.get("outputTokens") or 0),
        cached_input_tokens=int(data.get("cacheReadInputTokens") or 0),
    )


def parse_converse(response: dict[str, Any]) -> ChatMessage:
    """A Converse reply -> ``ChatMessage``: its text blocks joined, its toolUse blocks as tool calls."""
    blocks = response.get("output", {}).get("message", {}).get("content") or []
    texts = [b["text"] for b in blocks if "text" in b]
    calls = [
        ToolCall(
            id=b["toolUse"]["toolUseId"],
            function=ToolCallFunction(b["toolUse"]["name"], b["toolUse"].get("input")),
        )
        for b in blocks
        if "toolUse" in b
    ]
    return ChatMessage(
        content="".join(texts) if texts or not calls else None,
        tool_calls=calls or None,
        raw=response,
        token_usage=_usage(response.get("usage")),
    )


def iter_converse_stream(events: Any) -> Iterator[ChatMessageStreamDelta]:
    """``converse_stream``'s events -> deltas: text pieces, tool calls (indexed by content block: name
    and id on ``contentBlockStart``, argument JSON on the deltas), the usage from ``metadata``."""
    for event in events:
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]
            use = start.get("start", {}).get("toolUse")
            if use:
                piece = ToolCallStreamDelta(
                    index=start.get("contentBlockIndex"),
                    id=use.get("toolUseId"),
                    type="function",
                    function=ToolCallFunctionDelta(name=use.get("name"), arguments=""),
                )
                yield ChatMessageStreamDelta(content="", tool_calls=[piece])
        elif "contentBlockDelta" in event:
            block = event["contentBlockDelta"]
            delta = block.get("delta", {})
            if "text" in delta:
                yield ChatMessageStreamDelta(content=delta["text"])
            elif "toolUse" in delta:
                piece = ToolCallStreamDelta(
                    index=block.get("contentBlockIndex"),
                    function=ToolCallFunctionDelta(arguments=delta["toolUse"].get("input", "")),
                )
                yield ChatMessageStreamDelta(content="", tool_calls=[piece])
        elif "metadata" in event:
            usage = _usage(event["metadata"].get("usage"))
            if usage is not None:
                yield ChatMessageStreamDelta(content="", token_usage=usage)
