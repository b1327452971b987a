"""A user's own model function, for ``CallableModel``.

Configure it with ``fn: modelfactory.examples.custom_model.custom_model`` (the shipped ``custom_callable``
config; ``examples.custom_model.custom_model`` from a clone is the same function). It is deterministic: it echoes the last
user message after a prefix and adds a tail, so stop-sequence trimming is visible in the output.
"""

from __future__ import annotations

from typing import Any

PREFIX = "Echo: "
TAIL = "\nObservation: done. END"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def custom_model(
    messages: list[dict[str, Any]], stop_sequences: list[str] | None = None, grammar: Any = None
) -> str:
    """Reply ``"Echo: <last user message>"`` followed by a fixed tail.

    ``stop_sequences`` are deliberately ignored here: the model layer trims the output, which is what
    the stop contract promises for every backend. ``grammar`` is accepted and ignored.
    """
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    text = _text(last_user.get("content")) if last_user else ""
    return f"{PREFIX}{text}{TAIL}"
