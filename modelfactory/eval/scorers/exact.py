"""``exact``: the whole (normalised) reply equals one of the targets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..score import Score, ScoreFn, scorer, targets_of
from ._text import TextConfig, one_line


class ExactConfig(TextConfig):
    pass


@scorer("exact", config=ExactConfig)
def exact(cfg: ExactConfig) -> ScoreFn:
    def score(reply: str | None, item: Mapping[str, Any]) -> Score:
        answer = cfg.normalize(reply or "")
        targets = targets_of(item) or []
        hit = next((t for t in targets if cfg.normalize(t) == answer), None)
        why = f"equals target {hit!r}" if hit is not None else f"{one_line(answer)!r} is none of {targets!r}"
        return Score(1.0 if hit is not None else 0.0, answer=answer, explanation=why)

    return score
