"""model_graded: a modelfactory Model judges; its calls are cached, its cost apart, its failures errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfactory import CallableModel
from modelfactory.eval.scoring import build_scorer
from tests.eval import judges
from tests.timing import VirtualClock

ITEM = {
    "id": "q1",
    "messages": [{"role": "user", "content": "Capital of France?"}],
    "target": ["Paris", "Paris, FR"],
}
PRICE = {"input": 3.0, "output": 15.0}  # USD per million tokens


def judge(fn: str, tmp_path: Path, mode: str = "read_write") -> CallableModel:
    return CallableModel(
        fn=f"tests.eval.judges.{fn}",
        cache={"mode": mode, "path": str(tmp_path / "judge.sqlite")},
        price=PRICE,
    )


def test_the_judge_grades_and_its_cost_is_counted_apart(tmp_path: Path) -> None:
    judges.CALLS.clear()
    scorer = build_scorer("model_graded", judge=judge("strict", tmp_path))
    right = scorer("It is Paris.", ITEM)
    assert (right.value, right.answer, right.error) == (1.0, "C", None)
    assert "[Question]: Capital of France?" in judges.CALLS[0] and "Paris | Paris, FR" in judges.CALLS[0]
    assert right.metadata == {
        "judge_cost_usd": pytest.approx((1000 * 3.0 + 10 * 15.0) / 1e6),
        "judge_cached": False,
    }
    assert scorer("Lyon", ITEM).value == 0.0


def test_a_rescore_hits_the_judges_cache(tmp_path: Path) -> None:
    judges.CALLS.clear()
    first = build_scorer("model_graded", judge=judge("strict", tmp_path))("Paris", ITEM)
    again = build_scorer("model_graded", judge=judge("strict", tmp_path, mode="replay"))("Paris", ITEM)
    assert len(judges.CALLS) == 1  # the second judge never ran: served from the cache file
    assert again.value == first.value == 1.0
    assert again.metadata == {"judge_cost_usd": 0.0, "judge_cached": True}


def test_a_judge_from_config(tmp_path: Path) -> None:
    spec = {
        "name": "model_graded",
        "judge": {"_target_": "modelfactory.CallableModel", "fn": "tests.eval.judges.strict"},
    }
    assert build_scorer(spec)("Paris", ITEM).value == 1.0


@pytest.mark.parametrize(("fn", "words"), [("broken", "judge failed"), ("rambling", "judge gave no grade")])
def test_a_failing_judge_is_an_error_not_a_zero(
    tmp_path: Path, fn: str, words: str, virtual_clock: VirtualClock
) -> None:
    score = build_scorer("model_graded", judge=judge(fn, tmp_path, mode="off"))("Paris", ITEM)
    assert score.value is None and not score.scored and words in str(score.error)
    # the unreachable judge was retried first (its back-off on the test's clock, not 2 s of real sleep);
    # a judge that answered without a grade is not
    assert bool(virtual_clock.sleeps) == (fn == "broken")


def test_custom_grades(tmp_path: Path) -> None:
    spec = {"name": "model_graded", "grades": {"C": 1.0, "I": 0.25}}
    assert build_scorer(spec, judge=judge("strict", tmp_path))("Lyon", ITEM).value == 0.25
    odd = build_scorer({"name": "model_graded", "grades": {"C": 1.0}}, judge=judge("strict", tmp_path))(
        "Lyon", ITEM
    )
    assert odd.value is None and "'I' is not one of ['C']" in str(odd.error)
