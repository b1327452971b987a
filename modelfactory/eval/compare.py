"""Paired comparison of two runs on the same items: which is better, by how much, and how sure.

The difference of means comes with a paired bootstrap 95% CI (items resampled together, so an easy item
counts for both runs); for 0/1 scores McNemar's test on the discordant pairs (exact binomial when there
are fewer than 25, the chi-squared with continuity correction otherwise), and a verdict in words.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .metrics import DEFAULT_RESAMPLES, DEFAULT_SEED, mean

__all__ = ["Comparison", "compare_scores", "mcnemar"]

EXACT_BELOW = 25  # discordant pairs: exact binomial below this, chi-squared from here on


def mcnemar(b: int, c: int) -> tuple[float, str]:
    """McNemar's two-sided p-value for ``b`` pairs won by A only and ``c`` by B only, and the test used."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0, "exact"
    if n < EXACT_BELOW:
        tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
        return min(1.0, 2 * tail / 2**n), "exact"
    chi2 = (abs(b - c) - 1) ** 2 / n
    return min(1.0, math.erfc(math.sqrt(chi2 / 2))), "chi2"


@dataclass(frozen=True)
class Comparison:
    """A vs B on the items both scored: ``diff`` = mean(A) - mean(B) with its paired bootstrap CI."""

    label_a: str
    label_b: str
    n: int  # items scored in both runs
    only_a: int  # items in A but not scored in B (and the reverse): left out of the comparison
    only_b: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    a_only_correct: int | None  # McNemar's discordant pairs (0/1 scores only)
    b_only_correct: int | None
    p_value: float | None
    test: str | None  # "exact" | "chi2" | None (not 0/1 scores: the CI decides)
    significant: bool
    alpha: float
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_scores(
    a: Mapping[str, float | None],
    b: Mapping[str, float | None],
    *,
    label_a: str = "A",
    label_b: str = "B",
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Comparison:
    """Compare per-item scores (item id -> score, None for unscored) of two runs on the same items."""
    ok = lambda v: v is not None and not math.isnan(v)  # noqa: E731
    # in id order, not the order the rows were written (as calls finished): the same scores, the same CI
    common = sorted(i for i in a if ok(a[i]) and i in b and ok(b[i]))
    only_a = sum(1 for i in a if ok(a[i]) and i not in common)
    only_b = sum(1 for i in b if ok(b[i]) and not (i in a and ok(a[i])))
    if not common:
        return Comparison(
            label_a,
            label_b,
            0,
            only_a,
            only_b,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            False,
            alpha,
            "no item was scored in both runs: nothing to compare",
        )
    xa = [float(a[i]) for i in common]  # type: ignore[arg-type]
    xb = [float(b[i]) for i in common]  # type: ignore[arg-type]
    diffs = [p - q for p, q in zip(xa, xb, strict=True)]
    n = len(common)
    rng = random.Random(seed)
    boot = sorted(math.fsum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    tail = alpha / 2
    last = len(boot) - 1
    lo, hi = boot[max(0, math.floor(tail * last))], boot[min(last, math.ceil((1 - tail) * last))]
    d = mean(diffs)
    lo, hi = min(lo, d), max(hi, d)
    binary = all(v in (0.0, 1.0) for v in xa + xb)
    wins_a = wins_b = None
    p_value = test = None
    if binary:
        wins_a = sum(1 for p, q in zip(xa, xb, strict=True) if p > q)
        wins_b = sum(1 for p, q in zip(xa, xb, strict=True) if q > p)
        p_value, test = mcnemar(wins_a, wins_b)
        significant = p_value < alpha
    else:
        significant = lo > 0 or hi < 0
    verdict = _verdict(label_a, label_b, d, lo, hi, n, p_value, test, significant, alpha)
    return Comparison(
        label_a,
        label_b,
        n,
        only_a,
        only_b,
        mean(xa),
        mean(xb),
        d,
        lo,
        hi,
        wins_a,
        wins_b,
        p_value,
        test,
        significant,
        alpha,
        verdict,
    )


def _verdict(
    la: str,
    lb: str,
    d: float,
    lo: float,
    hi: float,
    n: int,
    p: float | None,
    test: str | None,
    significant: bool,
    alpha: float,
) -> str:
    ci = f"difference {d:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f}, n={n}"
    evidence = f"McNemar {test} p={p:.3g}" if p is not None else "paired bootstrap CI"
    if significant and d != 0:
        better, worse = (la, lb) if d > 0 else (lb, la)
        return f"{better} scores higher than {worse} ({ci}; {evidence}): significant at {alpha:g}"
    return f"no significant difference between {la} and {lb} ({ci}; {evidence}, alpha {alpha:g})"
