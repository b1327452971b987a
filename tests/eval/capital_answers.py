"""Two users' model functions for ``CallableModel`` runs of task=capitals (tests/eval/test_rescore.py):
one knows every capital, the other only the first few, so their runs differ by a known amount."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelfactory.eval.tasks import CAPITALS_FILE

_ANSWERS = {}
for _line in Path(CAPITALS_FILE).read_text(encoding="utf-8").splitlines():
    _row = json.loads(_line)
    _target = _row["target"]
    _ANSWERS[_row["prompt"]] = _target if isinstance(_target, str) else _target[0]
_KNOWN_BY_NOVICE = set(list(_ANSWERS)[:12])


def _question(messages: list[dict[str, Any]]) -> str:
    return str(next(m for m in reversed(messages) if m.get("role") == "user")["content"])


def expert(messages: list[dict[str, Any]]) -> str:
    return f"The capital is {_ANSWERS.get(_question(messages), 'unknown')}."


def novice(messages: list[dict[str, Any]]) -> str:
    question = _question(messages)
    if question in _KNOWN_BY_NOVICE:
        return f"It is {_ANSWERS[question]}!"
    if question.endswith("Peru."):
        raise RuntimeError("the novice's backend failed on this item")  # an error row: unscored
    return "I am not sure, maybe Springfield."
