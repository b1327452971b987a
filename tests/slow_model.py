"""A model function that takes its time (``CallableModel``'s ``fn``): a run long enough to interrupt."""

from __future__ import annotations

import time
from typing import Any


def slow_echo(messages: list[dict[str, Any]], stop_sequences: list[str] | None = None) -> str:
    time.sleep(0.2)
    return f"ok: {messages[-1]['content']}"
