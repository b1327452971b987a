"""``includes``: a target appears in the (normalised) reply; ``word_boundary`` keeps "Rome" out of "Romeo"."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from ..score import Score, ScoreFn, scorer, targets_of
from ._text import TextConfig, one_line


class IncludesConfig(TextConfig):
    word_boundary: bool = Field(default=True, description="the target must stand as whole words (true/false)")


@scorer("includes", config=IncludesConfig)
def includes(cfg: IncludesConfig) -> ScoreFn:
    def found(target: str, text: str) -> bool:
        if not target:
            return False
        if not cfg.word_boundary:
            return target in text
        return re.search(rf"(?<!\w){re.escape(target)}(?!\w)", text) is not None

    def score(reply: str | None, item: Mapping[str, Any]) -> Score:
        text = cfg.normalize(reply or "")
        targets = targets_of(item) or []
        hit = next((t for t in targets if found(cfg.normalize(t), text)), None)
        if hit is not None:
            return Score(1.0, answer=hit, explanation=f"reply contains {hit!r}")
        return Score(0.0, answer=None, explanation=f"none of {targets!r} in {one_line(text)!r}")

    return score
