"""``numeric``: the last number in the reply equals a numeric target within a tolerance (GSM8K style)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from ..score import Score, ScoreFn, ScorerConfig, scorer, targets_of
from ._text import one_line

# 1,234.5  -3  .5  1e-3  (thousands separators only in groups of three); every match holds a digit
_NUMBER = re.compile(r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")


def numbers_in(text: str) -> list[float]:
    out = []
    for m in _NUMBER.finditer(text):
        token = m.group(0)
        try:
            out.append(float(token.replace(",", "")))
        except ValueError:
            continue
    return out


class NumericConfig(ScorerConfig):
    abs_tol: float = Field(default=1e-6, ge=0, description="absolute tolerance, e.g. 0.01")
    rel_tol: float = Field(default=0.0, ge=0, description="relative tolerance, e.g. 0.001")
    take: str = Field(default="last", pattern="^(last|first)$", description="which number: last | first")


@scorer("numeric", config=NumericConfig)
def numeric(cfg: NumericConfig) -> ScoreFn:
    def score(reply: str | None, item: Mapping[str, Any]) -> Score:
        found = numbers_in(reply or "")
        targets: list[float] = []
        for text in targets_of(item) or []:
            parsed = numbers_in(text)
            if len(parsed) != 1:
                return Score.failed(f"item {item.get('id')!r}: target {text!r} is not one number")
            targets.append(parsed[0])
        if not found:
            return Score(0.0, answer=None, explanation=f"no number in {one_line(reply or '')!r}")
        value = found[-1] if cfg.take == "last" else found[0]
        answer = f"{value:g}"
        for t in targets:
            if math.isclose(value, t, rel_tol=cfg.rel_tol, abs_tol=cfg.abs_tol):
                return Score(1.0, answer=answer, explanation=f"{answer} = target {t:g}")
        return Score(
            0.0, answer=answer, explanation=f"{answer} is not {', '.join(f'{t:g}' for t in targets)}"
        )

    return score
