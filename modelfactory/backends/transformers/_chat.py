"""Chat prompts: normalised messages (and tool schemas) rendered through the tokenizer's chat template."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._local import text_message, with_tools_block

__all__ = ["render_prompt"]


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
    (the shipped tiny ChatML one does) gets them as a system message instead
    (:func:`modelfactory.backends._local.tools_block`, shared with LlamaCppModel).
    """
    # The override goes to this call only: the tokenizer is shared with other models (weight cache).
    extra = {**(template_kwargs or {}), **({"chat_template": template} if template else {})}
    rows = [text_message(m, i, "TransformersModel") for i, m in enumerate(messages)]
    text = tokenizer.apply_chat_template(rows, tokenize=False, add_generation_prompt=True, **extra)
    if tools:
        with_tools = tokenizer.apply_chat_template(
            rows, tools=list(tools), tokenize=False, add_generation_prompt=True, **extra
        )
        if with_tools != text:
            return str(with_tools)
        text = tokenizer.apply_chat_template(
            with_tools_block(rows, tools), tokenize=False, add_generation_prompt=True, **extra
        )
    return str(text)
