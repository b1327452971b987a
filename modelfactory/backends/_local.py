"""What the in-process chat backends (transformers, llama.cpp) share: the text-only rows every chat
template accepts, and the tools block for a template that does not render ``tools=`` itself.

One copy here, so both backends refuse images alike and show tools to a model in the same words. (Their
stops and streams share :func:`modelfactory.messages.settled_prefix`.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import MessageError, UnsupportedFeatureError

__all__ = ["text_message", "tools_block", "with_tools_block"]


def text_message(message: dict[str, Any], index: int, owner: str) -> dict[str, Any]:
    """Role + plain-text content: what every chat template accepts. Images are refused clearly
    (``owner``: the model class the message says takes text only)."""
    content = message.get("content")
    if content is None:
        content = ""
    elif not isinstance(content, str):
        kinds = sorted({str(p.get("type")) for p in content if p.get("type") != "text"})
        if kinds:
            raise UnsupportedFeatureError(
                f"messages[{index}]: {owner} takes text only, got {', '.join(kinds)} parts "
                "(use an API backend with a vision model for images)"
            )
        content = "\n".join(str(p.get("text", "")) for p in content)
    role = message.get("role")
    if not isinstance(role, str):
        raise MessageError(f"messages[{index}]: role must be a string")
    return {"role": role, "content": content}


def tools_block(tools: Sequence[dict[str, Any]]) -> str:
    """The tools section for a chat template that does not render ``tools=`` itself."""
    lines = [
        "You can call these tools. To call one, answer with only a JSON object "
        '{"name": <tool name>, "arguments": {<argument>: <value>, ...}}.',
        "Tools:",
    ]
    lines += [json.dumps(t.get("function", t), sort_keys=True) for t in tools]
    return "\n".join(lines)


def with_tools_block(rows: list[dict[str, Any]], tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the tools block prepended to the system message (or as a new first one)."""
    block = tools_block(tools)
    if rows and rows[0]["role"] == "system":
        return [{"role": "system", "content": f"{rows[0]['content']}\n\n{block}"}, *rows[1:]]
    return [{"role": "system", "content": block}, *rows]
