"""``choice``: a multiple-choice letter read from the reply ("B", "(B)", "Answer: B", "B) Paris")."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from ..score import Score, ScoreFn, ScorerConfig, scorer, targets_of
from ._text import one_line


class ChoiceConfig(ScorerConfig):
    letters: str = Field(default="ABCDEFGHIJ", min_length=2, description="the option letters, e.g. ABCD")


@scorer("choice", config=ChoiceConfig)
def choice(cfg: ChoiceConfig) -> ScoreFn:
    letters = re.escape(cfg.letters.upper())
    # the strongest evidence first: "answer is B" / "Answer: (B)", then a line starting "B)" / "(B)" /
    # "B." / a lone "B", then any stand-alone capital letter of the set.
    rules = [
        re.compile(rf"answer\s*(?:is|:)?\s*[\(\[]?([{letters}])\b(?![a-z])", re.IGNORECASE),
        re.compile(rf"^\s*[\(\[]?([{letters}])(?:[\)\]\.:]|\s*$)", re.MULTILINE),
        re.compile(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])"),
    ]

    def score(reply: str | None, item: Mapping[str, Any]) -> Score:
        text = reply or ""
        answer = None
        for rule in rules:
            m = rule.search(text)
            if m:
                answer = m.group(1).upper()
                break
        targets = [t.strip().strip("()").upper() for t in targets_of(item) or []]
        if answer is None:
            return Score(0.0, answer=None, explanation=f"no letter of {cfg.letters} in {one_line(text)!r}")
        hit = answer in targets
        return Score(
            1.0 if hit else 0.0, answer=answer, explanation=f"chose {answer}, target {'/'.join(targets)}"
        )

    return score
