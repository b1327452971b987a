"""Numbers with their uncertainty: mean (accuracy for 0/1 scores) with its standard error and a seeded
bootstrap 95% CI, unscored items counted apart, and epochs reduced per item (mean, max, pass@k).

Pure Python (no numpy): a few thousand items resampled 1,000 times take well under a second, and the
summary of a run must not need the heavy extras.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError, Problem

__all__ = [
    "Summary",
    "bootstrap_ci",
    "pass_at_k",
    "reduce_epochs",
    "stderr",
    "summarize",
    "summarize_epochs",
]

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Summary:
    """``mean`` over the ``n`` scored items with ``stderr`` and a 95% CI ``[ci_low, ci_high]``;
    ``unscored`` items (errors: no reply, a failed judge) are not in ``n``."""

    mean: float | None
    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    unscored: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if self.mean is None:
            return f"no scored items ({self.unscored} unscored)"
        text = (
            f"{self.mean:.3f} ± {self.stderr:.3f} (95% CI {self.ci_low:.3f}–{self.ci_high:.3f}, n={self.n})"
        )
        return text + (f", {self.unscored} unscored" if self.unscored else "")


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def stderr(values: Sequence[float]) -> float:
    """The standard error of the mean (sample standard deviation / sqrt(n)); 0 for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return 0.0
    m = mean(values)
    var = math.fsum((v - m) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)


def bootstrap_ci(
    values: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """The percentile bootstrap CI of the mean, from a seeded generator: the same data give the same CI."""
    n = len(values)
    if n == 0:
        raise ValueError("bootstrap_ci of no values")
    rng = random.Random(seed)
    means = sorted(math.fsum(rng.choices(values, k=n)) / n for _ in range(resamples))
    return _percentiles(means, level)


def _percentiles(sorted_values: Sequence[float], level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    last = len(sorted_values) - 1
    lo = sorted_values[max(0, math.floor(tail * last))]
    hi = sorted_values[min(last, math.ceil((1 - tail) * last))]
    return lo, hi


def summarize(
    values: Sequence[float | None], *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> Summary:
    """The :class:`Summary` of per-item scores; ``None`` entries are unscored items."""
    scored = [float(v) for v in values if v is not None and not math.isnan(v)]
    unscored = len(values) - len(scored)
    if not scored:
        return Summary(None, None, None, None, 0, unscored)
    m = mean(scored)
    lo, hi = bootstrap_ci(scored, resamples=resamples, seed=seed)
    # the mean itself always lies in its CI (a percentile CI of a skewed resample can miss it by a hair)
    return Summary(m, stderr(scored), min(lo, m), max(hi, m), len(scored), unscored)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one problem with ``c`` of ``n`` samples correct (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k), in the numerically stable product form of the Codex paper."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs at least {k} samples per item, got {n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


_PASS_AT = re.compile(r"^pass@(\d+)$")


def reduce_epochs(
    values: Sequence[float | None], reducer: str = "mean", *, key: str = "epochs.reducer"
) -> float | None:
    """One item's scores over its epochs, reduced: ``mean``, ``max``, or ``pass@k`` (scores > 0 count as
    correct). Unscored epochs are left out; an item with none scored stays unscored (None)."""
    scored = [float(v) for v in values if v is not None and not math.isnan(v)]
    m = _PASS_AT.match(reducer)
    if reducer not in ("mean", "max") and not m:
        raise ConfigError(
            [
                Problem(
                    key, f"unknown reducer {reducer!r}", "one of: mean, max, pass@K (e.g. pass@1, pass@10)"
                )
            ],
            title="invalid epochs",
        )
    if not scored:
        return None
    if reducer == "mean":
        return mean(scored)
    if reducer == "max":
        return max(scored)
    assert m is not None
    k = int(m.group(1))
    if k < 1 or k > len(scored):
        raise ConfigError(
            [
                Problem(
                    key,
                    f"{reducer} needs at least {k} scored epochs per item, got {len(scored)}",
                    f"epochs >= {k}",
                )
            ],
            title="invalid epochs",
        )
    return pass_at_k(len(scored), sum(1 for v in scored if v > 0), k)


def summarize_epochs(
    per_item: Mapping[str, Sequence[float | None]], reducer: str = "mean", **kwargs: Any
) -> Summary:
    """Reduce each item's epochs, then summarize across items (pass@k: the mean of per-item pass@k)."""
    return summarize([reduce_epochs(v, reducer) for v in per_item.values()], **kwargs)
