"""``model_graded``: any modelfactory Model grades the reply against the target (Inspect's
``model_graded_qa``). The judge is called like any model, so its calls go through its own response
cache (give the judge ``cache: {mode: read_write}`` and a re-score costs nothing) and its cost is
reported apart, in each score's ``metadata.judge_cost_usd``, never mixed with the graded model's. A judge
that fails, or answers without a grade, gives an unscored item (an error), not a zero.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from ...errors import ConfigError, Problem
from ..score import Score, ScoreFn, ScorerConfig, scorer, targets_of
from ._text import compile_regex, one_line

DEFAULT_TEMPLATE = """You are assessing a submitted answer to a question against a reference answer.

[Question]: {question}
[Reference answer]: {target}
[Submission]: {answer}

Does the submission give the same answer as the reference (wording may differ)? Think briefly, then end
your reply with one line 'GRADE: C' if it is correct, 'GRADE: P' if partially correct, or 'GRADE: I' if
it is incorrect."""

_FIELDS = {"question", "answer", "target"}


class ModelGradedConfig(ScorerConfig):
    template: str = Field(
        default=DEFAULT_TEMPLATE, description="the judge prompt: {question} {target} {answer}"
    )
    grade_pattern: str = Field(default=r"GRADE\s*:\s*([A-Z])", description="regex with the grade as group 1")
    grades: dict[str, float] = Field(
        default_factory=lambda: {"C": 1.0, "P": 0.5, "I": 0.0}, description="grade letter -> score"
    )
    judge: dict[str, Any] | None = Field(
        default=None, description="the judge's model config (a _target_ and kwargs), or pass judge=<Model>"
    )
    judge_kwargs: dict[str, Any] = Field(default_factory=dict, description="per-call kwargs, e.g. max_tokens")

    @field_validator("template")
    @classmethod
    def _fields(cls, value: str) -> str:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"template does not parse: {exc}") from None
        unknown = names - _FIELDS
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; use {sorted(_FIELDS)}")
        return value

    @field_validator("grade_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        if compile_regex(value).groups < 1:
            raise ValueError(f"regex {value!r} needs a capture group for the grade")
        return value


def question_of(item: Mapping[str, Any]) -> str:
    """The question an item asked: its ``question`` field, else its last user message's text."""
    if item.get("question"):
        return str(item["question"])
    for message in reversed(item.get("messages") or []):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
            return str(content)
    return ""


@scorer("model_graded", config=ModelGradedConfig)
def model_graded(cfg: ModelGradedConfig, judge: Any = None) -> ScoreFn:
    if judge is None and cfg.judge is not None:
        from ...factory import build_model

        judge = build_model(cfg.judge)
    if judge is None:
        raise ConfigError(
            [
                Problem(
                    "scorer.judge",
                    "model_graded needs a judge model",
                    "scorer.judge={_target_: ...} or judge=<Model>",
                )
            ],
            title="invalid scorer 'model_graded'",
        )
    from ...pricing import cost_usd, price_for

    price = price_for(judge)
    grade_re = re.compile(cfg.grade_pattern)

    def score(reply: str | None, item: Mapping[str, Any]) -> Score:
        prompt = cfg.template.format(
            question=question_of(item), target=" | ".join(targets_of(item) or []), answer=reply or ""
        )
        try:
            # a Model is thread-safe (the runner's threads share one), so scoring threads may share the judge
            verdict = judge([{"role": "user", "content": prompt}], **cfg.judge_kwargs)
        except Exception as exc:  # noqa: BLE001 - any judge failure is an unscored item, never a zero
            return Score.failed(f"judge failed: {type(exc).__name__}: {one_line(str(exc), 160)}")
        raw = getattr(verdict, "raw", None)
        cached = isinstance(raw, dict) and raw.get("cache") == "hit"
        cost = 0.0 if cached else cost_usd(getattr(verdict, "token_usage", None), price)
        meta = {"judge_cost_usd": cost, "judge_cached": cached}
        text = str(getattr(verdict, "content", verdict) or "")
        grades = grade_re.findall(text)
        if not grades:
            failed = Score.failed(f"judge gave no grade: {one_line(text)!r}")
            failed.metadata = meta
            return failed
        grade = str(grades[-1]).upper()
        if grade not in cfg.grades:
            failed = Score.failed(f"judge grade {grade!r} is not one of {sorted(cfg.grades)}")
            failed.metadata = meta
            return failed
        return Score(cfg.grades[grade], answer=grade, explanation=f"judge: GRADE {grade}", metadata=meta)

    return score
