"""Tool schemas: what ``tools_to_call_from`` may hold (OpenAI dicts or smolagents-style Tool objects),
turned into the OpenAI function schema every backend sends or renders."""

from __future__ import annotations

from typing import Any

from .errors import MessageError

__all__ = ["tool_to_schema"]


def tool_to_schema(tool: Any) -> dict[str, Any]:
    """An OpenAI function schema from a dict (as-is) or a smolagents-style Tool object."""
    if isinstance(tool, dict):
        return tool
    inputs = getattr(tool, "inputs", None)
    name = getattr(tool, "name", None)
    if not isinstance(name, str) or not isinstance(inputs, dict):
        raise MessageError(
            f"tools_to_call_from: cannot turn {type(tool).__name__} into a tool schema "
            "(give an OpenAI-style dict or an object with .name, .description and .inputs)"
        )
    properties: dict[str, Any] = {}
    required = []
    for key, spec in inputs.items():
        prop = {k: v for k, v in spec.items() if k in ("type", "description", "enum", "items")}
        if prop.get("type") == "any":
            prop["type"] = "string"
        properties[key] = prop
        if not spec.get("nullable"):
            required.append(key)
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": getattr(tool, "description", "") or "",
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }
