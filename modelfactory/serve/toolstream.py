"""Tool calls in a local model's stream.

A local model (transformers, llama.cpp) writes a tool call as JSON text, which its non-streamed reply
parses into ``tool_calls`` (:meth:`modelfactory.model.Model.parse_tool_calls`). A stream would otherwise
hand that JSON to the client as content; :class:`ToolCallStream` holds the text back from its first ``{``
and, at the end, sends the same parse as OpenAI's tool-call deltas (``index``; ``id``, ``type`` and the
name on the first, the arguments after), or the held text as content when it is no tool call.
"""

import json
from collections.abc import Callable
from typing import Any

from ..errors import BackendError
from ..messages import ChatMessage

__all__ = ["ToolCallStream"]


class ToolCallStream:
    """Splits a local model's streamed text into content and the tool calls its JSON holds."""

    def __init__(self, parse: Callable[[ChatMessage], ChatMessage]) -> None:
        self._parse = parse
        self._held: str | None = None  # the text from the first "{" on: maybe a tool call

    def feed(self, text: str) -> str:
        """The content to send now (everything before a ``{``; nothing once one came)."""
        if self._held is not None:
            self._held += text
            return ""
        start = text.find("{")
        if start < 0:
            return text
        self._held = text[start:]
        return text[:start]

    def finish(self) -> tuple[str, list[list[dict[str, Any]]]]:
        """The held text to send as content (when it holds no tool call) and the tool-call deltas (one
        list per chunk) when it does."""
        held, self._held = self._held, None
        if not held:
            return "", []
        try:
            calls = self._parse(ChatMessage(role="assistant", content=held)).tool_calls or []
        except BackendError:  # no valid JSON call: it was text after all
            return held, []
        if not calls:
            return held, []
        chunks: list[list[dict[str, Any]]] = []
        for index, call in enumerate(calls):
            args = call.function.arguments
            chunks.append(
                [
                    {
                        "index": index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": ""},
                    }
                ]
            )
            text = args if isinstance(args, str) else json.dumps(args)
            chunks.append([{"index": index, "function": {"arguments": text}}])
        return "", chunks
