"""``pattern``: a regex extracts the answer (its first capture group, or the whole match) and the answer
is compared with the targets (lm-eval's ``filter_list`` regex + ``take_first``, then ``exact_match``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from ..score import Score, ScoreFn, scorer, targets_of
from ._text import TextConfig, compile_regex, one_line


class PatternConfig(TextConfig):
    pattern: str = Field(description=r"a regex with a capture group, e.g. 'Answer:\s*(\w+)'")
    match: Literal["first", "last"] = Field(default="first", description="which match to take: first | last")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:  # type: ignore[override]
        compile_regex(value)
        return value


@scorer("pattern", config=PatternConfig)
def pattern(cfg: PatternConfig) -> ScoreFn:
    regex = compile_regex(cfg.pattern, re.IGNORECASE if cfg.ignore_case else 0)

    def score(reply: str | None, item: Mapping[str, Any]) -> Score:
        matches = list(regex.finditer(reply or ""))
        if not matches:
            return Score(
                0.0, answer=None, explanation=f"no match of {cfg.pattern!r} in {one_line(reply or '')!r}"
            )
        m = matches[0] if cfg.match == "first" else matches[-1]
        groups = [g for g in m.groups() if g is not None]
        answer = cfg.normalize(groups[0] if groups else m.group(0))
        targets = targets_of(item) or []
        hit = next((t for t in targets if cfg.normalize(t) == answer), None)
        why = (
            f"extracted {answer!r} = target"
            if hit is not None
            else f"extracted {answer!r}, not in {targets!r}"
        )
        return Score(1.0 if hit is not None else 0.0, answer=answer, explanation=why)

    return score
