"""Paired comparison: McNemar's test (exact and chi-squared), a paired bootstrap CI, a verdict."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelfactory.eval.compare import compare_scores, mcnemar


@given(st.integers(0, 200), st.integers(0, 200))
def test_mcnemar_is_symmetric_and_a_probability(b: int, c: int) -> None:
    p, test = mcnemar(b, c)
    assert mcnemar(c, b) == (p, test)
    assert 0.0 <= p <= 1.0
    assert test == ("exact" if b + c < 25 else "chi2")
    if b == c:
        assert p == 1.0 or test == "chi2"


def test_mcnemar_known_values() -> None:
    # exact: 0 vs 10 discordant pairs -> 2 * 0.5**10
    assert mcnemar(0, 10) == (pytest.approx(2 / 1024), "exact")
    assert mcnemar(2, 8)[0] == pytest.approx(2 * sum(math.comb(10, i) for i in range(3)) / 1024)
    # chi-squared with continuity correction: (|30-10|-1)^2/40 = 9.025 -> p = 0.00266
    p, test = mcnemar(30, 10)
    assert test == "chi2" and p == pytest.approx(0.002663, rel=1e-3)


pairs = st.lists(st.tuples(st.sampled_from([0.0, 1.0]), st.sampled_from([0.0, 1.0])), min_size=1, max_size=80)


@given(pairs)
def test_swapping_the_runs_negates_the_difference(rows: list[tuple[float, float]]) -> None:
    a = {str(i): x for i, (x, _) in enumerate(rows)}
    b = {str(i): y for i, (_, y) in enumerate(rows)}
    ab, ba = compare_scores(a, b), compare_scores(b, a)
    assert ab.diff == pytest.approx(-ba.diff)  # type: ignore[operator]
    assert ab.p_value == ba.p_value and ab.significant == ba.significant
    assert ab.ci_low <= ab.diff <= ab.ci_high  # type: ignore[operator]
    assert (ab.a_only_correct, ab.b_only_correct) == (ba.b_only_correct, ba.a_only_correct)


def test_a_clear_win_is_significant_and_said_in_words() -> None:
    a = {f"q{i}": 1.0 for i in range(40)}
    b = {f"q{i}": 1.0 if i < 15 else 0.0 for i in range(40)}
    result = compare_scores(a, b, label_a="llama.cpp", label_b="transformers")
    assert result.significant and result.test == "chi2" and result.diff == pytest.approx(25 / 40)
    assert result.verdict.startswith("llama.cpp scores higher than transformers")
    assert result.ci_low > 0


def test_equal_runs_are_not_significant() -> None:
    a = {f"q{i}": float(i % 2) for i in range(30)}
    b = {f"q{i}": float((i + 1) % 2) for i in range(30)}  # as good, on other items
    result = compare_scores(a, b)
    assert not result.significant and result.verdict.startswith("no significant difference")


def test_only_items_scored_in_both_are_compared() -> None:
    a = {"x": 1.0, "y": 0.0, "z": None, "w": 1.0}
    b = {"x": 1.0, "y": 1.0, "z": 1.0}
    result = compare_scores(a, b)
    assert result.n == 2 and result.only_a == 1 and result.only_b == 1


def test_graded_scores_use_the_bootstrap_ci() -> None:
    a = {f"q{i}": 0.9 for i in range(30)}
    b = {f"q{i}": 0.5 + (i % 3) / 10 for i in range(30)}
    result = compare_scores(a, b)
    assert result.test is None and result.p_value is None and result.significant
    assert "paired bootstrap CI" in result.verdict


def test_nothing_in_common() -> None:
    result = compare_scores({"a": 1.0}, {"b": 1.0})
    assert result.n == 0 and not result.significant and "nothing to compare" in result.verdict
