"""Metrics: the CI holds the mean, the bootstrap is seeded, pass@k is the Codex paper's estimator."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelfactory.errors import ConfigError
from modelfactory.eval.metrics import (
    bootstrap_ci,
    pass_at_k,
    reduce_epochs,
    stderr,
    summarize,
    summarize_epochs,
)

scores = st.lists(st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0, 1)), min_size=1, max_size=60)


@given(scores, st.integers(0, 2**32))
def test_the_ci_holds_the_mean_and_is_seeded(values: list[float], seed: int) -> None:
    s = summarize(values, resamples=200, seed=seed)
    assert s.n == len(values) and s.unscored == 0
    assert s.mean is not None and s.ci_low is not None and s.ci_high is not None and s.stderr is not None
    assert s.ci_low <= s.mean <= s.ci_high
    assert min(values) - 1e-12 <= s.ci_low and s.ci_high <= max(values) + 1e-12
    assert s.stderr >= 0
    assert summarize(values, resamples=200, seed=seed) == s  # the same seed, the same CI


@given(scores, st.integers(0, 30))
def test_unscored_items_are_counted_apart(values: list[float], errors: int) -> None:
    s = summarize([*values, *([None] * errors)], resamples=50)
    assert s.unscored == errors and s.n == len(values)
    assert s.mean == pytest.approx(math.fsum(values) / len(values))


def test_nothing_scored_has_no_mean() -> None:
    s = summarize([None, None])
    assert s.mean is None and s.n == 0 and s.unscored == 2 and "2 unscored" in str(s)


def test_stderr_matches_the_textbook_formula() -> None:
    # 0/1 scores: sqrt(p(1-p)/(n-1)) with the sample variance
    values = [1.0] * 30 + [0.0] * 70
    assert stderr(values) == pytest.approx(math.sqrt(0.3 * 0.7 * 100 / 99 / 100))


def test_a_wider_sample_narrows_the_ci() -> None:
    small = bootstrap_ci([1.0, 0.0] * 10, seed=1)
    large = bootstrap_ci([1.0, 0.0] * 500, seed=1)
    assert large[1] - large[0] < small[1] - small[0]


@given(st.integers(1, 60).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_is_the_unbiased_estimator(nck: tuple[int, int, int]) -> None:
    n, c, k = nck
    value = pass_at_k(n, c, k)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)
    if k == 1:
        assert value == pytest.approx(c / n)
    if c < n:  # one more correct sample never lowers it; a larger k never lowers it
        assert pass_at_k(n, c + 1, k) >= value - 1e-12
    if k < n:
        assert pass_at_k(n, c, k + 1) >= value - 1e-12


def test_pass_at_k_needs_k_samples() -> None:
    with pytest.raises(ValueError, match="at least 5"):
        pass_at_k(3, 1, 5)


def test_epoch_reducers() -> None:
    assert reduce_epochs([1, 0, 0, 1], "mean") == 0.5
    assert reduce_epochs([0, 0.5, None], "max") == 0.5
    assert reduce_epochs([1, 0, 0, 0], "pass@2") == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))
    assert reduce_epochs([None, None], "mean") is None  # no epoch scored: the item stays unscored
    with pytest.raises(ConfigError, match="epochs.reducer.*median"):
        reduce_epochs([1], "median")
    with pytest.raises(ConfigError, match="at least 3 scored epochs"):
        reduce_epochs([1, 0], "pass@3")
    s = summarize_epochs({"a": [1, 0], "b": [0, 0], "c": [None, None]}, "pass@1")
    assert s.mean == 0.25 and s.n == 2 and s.unscored == 1
