"""Chat prompts: normalised messages (and tool schemas) rendered through the tokenizer's chat template."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import MessageError, UnsupportedFeatureError

__all__ = ["render_prompt", "text_message", "tools_block"]


def render_prompt(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None = None,
    template: str | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """The prompt text a chat template builds from normalised messages: ``template``, else the
    tokenizer's, with ``template_kwargs`` as extra template variables.

    ``tools`` (OpenAI function schemas) go to the template as ``tools=``; a template that ignores them
    (the shipped tiny ChatML one does) gets them as a system message instead: :func:`tools_block`.
    """
    # The override goes to this call only: the tokenizer is shared with other models (weight cache).
    extra = {**(template_kwargs or {}), **({"chat_template": template} if template else {})}
    rows = [text_message(m, i) for i, m in enumerate(messages)]
    text = tokenizer.apply_chat_template(rows, tokenize=False, add_generation_prompt=True, **extra)
    if tools:
        with_tools = tokenizer.apply_chat_template(
            rows, tools=list(tools), tokenize=False, add_generation_prompt=True, **extra
        )
        if with_tools != text:
            return str(with_tools)
        text = tokenizer.apply_chat_template(
            _with_tools_block(rows, tools), tokenize=False, add_generation_prompt=True, **extra
        )
    return str(text)


def tools_block(tools: Sequence[dict[str, Any]]) -> str:
    """The tools section for a chat template that does not render ``tools=`` itself."""
    lines = [
        "You can call these tools. To call one, answer with only a JSON object "
        '{"name": <tool name>, "arguments": {<argument>: <value>, ...}}.',
        "Tools:",
    ]
    lines += [json.dumps(t.get("function", t), sort_keys=True) for t in tools]
    return "\n".join(lines)


def _with_tools_block(rows: list[dict[str, Any]], tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the tools block prepended to the system message (or as a new first one)."""
    block = tools_block(tools)
    if rows and rows[0]["role"] == "system":
        return [{"role": "system", "content": f"{rows[0]['content']}\n\n{block}"}, *rows[1:]]
    return [{"role": "system", "content": block}, *rows]


def text_message(message: dict[str, Any], index: int) -> dict[str, Any]:
    """Role + plain-text content: what every chat template accepts. Images are refused clearly."""
    content = message.get("content")
    if content is None:
        content = ""
    elif not isinstance(content, str):
        kinds = sorted({str(p.get("type")) for p in content if p.get("type") != "text"})
        if kinds:
            raise UnsupportedFeatureError(
                f"messages[{index}]: TransformersModel takes text only, got {', '.join(kinds)} parts "
                "(use an API backend with a vision model for images)"
            )
        content = "\n".join(str(p.get("text", "")) for p in content)
    role = message.get("role")
    if not isinstance(role, str):
        raise MessageError(f"messages[{index}]: role must be a string")
    return {"role": role, "content": content}
