"""``choice``: a multiple-choice letter read from the reply ("B", "(B)", "Answer: B", "B) Paris"), or with
``use_logprobs: true`` from the reply's first-token log-probabilities: the option letter the model found
most likely to start its answer with, among that token's ``top_logprobs`` (a job asks for them with
``generation.logprobs=true generation.top_logprobs=5``). A reply without them, or whose first token's
alternatives hold no option letter, is read from its text, and the explanation says which was used."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from ...messages import TokenLogprob
from ..score import Score, ScoreFn, ScorerConfig, scorer, targets_of
from ._text import one_line

# around a letter token: whitespace and the marks of "(B)", "[B]", "B.", "B:" ("B)" is often one token)
_MARKS = " \t\n()[].:"


class ChoiceConfig(ScorerConfig):
    letters: str = Field(default="ABCDEFGHIJ", min_length=2, description="the option letters, e.g. ABCD")
    use_logprobs: bool = Field(
        default=False,
        description="true: pick the letter from the reply's first-token top_logprobs when it has them "
        "(generation.logprobs=true generation.top_logprobs=5), else from the text",
    )


def first_token_letters(logprobs: Sequence[TokenLogprob], letters: str) -> dict[str, float]:
    """Each option letter's probability as the reply's first token, from that token's alternatives
    (``top``, or the token itself when no alternatives were asked for): tokens that are one letter of
    ``letters`` once whitespace and brackets are stripped ("B", " B", "(B") add up per letter."""
    first = logprobs[0]
    candidates = first.top or [(first.token, first.logprob)]
    out: dict[str, float] = {}
    for token, logprob in candidates:
        bare = token.strip(_MARKS)
        if len(bare) == 1 and bare in letters:
            out[bare] = out.get(bare, 0.0) + math.exp(logprob)
    return out


@scorer("choice", config=ChoiceConfig, uses_logprobs=True)
def choice(cfg: ChoiceConfig) -> ScoreFn:
    letters = re.escape(cfg.letters.upper())
    # the strongest evidence first: "answer is B" / "Answer: (B)", then a line starting "B)" / "(B)" /
    # "B." / a lone "B", then any stand-alone capital letter of the set.
    rules = [
        re.compile(rf"answer\s*(?:is|:)?\s*[\(\[]?([{letters}])\b(?![a-z])", re.IGNORECASE),
        re.compile(rf"^\s*[\(\[]?([{letters}])(?:[\)\]\.:]|\s*$)", re.MULTILINE),
        re.compile(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])"),
    ]

    def from_text(text: str) -> str | None:
        for rule in rules:
            m = rule.search(text)
            if m:
                return m.group(1).upper()
        return None

    def score(
        reply: str | None, item: Mapping[str, Any], logprobs: Sequence[TokenLogprob] | None = None
    ) -> Score:
        text = reply or ""
        targets = [t.strip().strip("()").upper() for t in targets_of(item) or []]
        metadata: dict[str, Any] = {}
        answer, how = None, ""
        if cfg.use_logprobs:
            probs = first_token_letters(logprobs, cfg.letters.upper()) if logprobs else {}
            if probs:
                answer = max(probs, key=lambda k: probs[k])
                metadata["letter_probs"] = {k: round(v, 6) for k, v in sorted(probs.items())}
                others = ", ".join(f"{k} {v:.2f}" for k, v in sorted(probs.items()) if k != answer)
                how = f" from the first token's logprobs (p {probs[answer]:.2f}{'; ' + others if others else ''})"
            elif logprobs:
                how = " from the text (no option letter among the first token's top_logprobs)"
            else:
                how = " from the text (the reply has no logprobs: generation.logprobs=true)"
        if answer is None:
            answer = from_text(text)
        if answer is None:
            why = f"no letter of {cfg.letters} in {one_line(text)!r}" + how
            return Score(0.0, answer=None, explanation=why, metadata=metadata)
        hit = answer in targets
        return Score(
            1.0 if hit else 0.0,
            answer=answer,
            explanation=f"chose {answer}{how}, target {'/'.join(targets)}",
            metadata=metadata,
        )

    return score
