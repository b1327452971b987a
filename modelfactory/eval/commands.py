"""The ``score`` and ``compare`` subcommands of the ``modelfactory`` CLI (argparse lives in cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError, ModelFactoryError

__all__ = ["compare_command", "is_run_dir", "score_command"]


def is_run_dir(path: Path) -> bool:
    """A single run's dir (its own results / job record), not a sweep dir of several jobs."""
    from ..job.record import JOB_FILE, RESULTS_FILE

    return (path / JOB_FILE).is_file() or (path / RESULTS_FILE).is_file()


def score_command(run_dir: Path, overrides: list[str], workers: int = 2) -> int:
    """``modelfactory score RUN_DIR [scorer=NAME scorer.KEY=VALUE ...]``: re-score without any model call."""
    from .rescore import SCORES_FILE, parse_overrides, rescore_run

    specs, problems = parse_overrides(overrides)
    if problems:
        print(ConfigError(problems, title="invalid arguments"), file=sys.stderr)
        return 2
    if not run_dir.is_dir():
        print(f"error: no run directory {run_dir}", file=sys.stderr)
        return 2
    try:
        done = rescore_run(run_dir, specs, workers=workers)
    except ModelFactoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    for label, summary in done.summaries.items():
        print(f"{label}: {summary}")
    if done.judge_cost_usd is not None:
        print(f"judge cost: ${done.judge_cost_usd:.4f}")
    print(f"{done.rows} rows scored -> {run_dir / SCORES_FILE}")
    return 0


def compare_command(run_a: Path, run_b: Path, scorer: str | None = None, alpha: float = 0.05) -> int:
    """``modelfactory compare RUN_A RUN_B``: the paired comparison of two scored runs, per scorer."""
    from .compare import compare_scores
    from .rescore import read_scores

    scores_a, scores_b = read_scores(run_a), read_scores(run_b)
    for run, scores in ((run_a, scores_a), (run_b, scores_b)):
        if not scores:
            print(f"error: {run} has no scores: run `modelfactory score {run}` first", file=sys.stderr)
            return 2
    labels = [label for label in scores_a if label in scores_b]
    if scorer is not None:
        labels = [label for label in labels if label == scorer]
    if not labels:
        print(f"error: no scorer in common (A: {sorted(scores_a)}, B: {sorted(scores_b)})", file=sys.stderr)
        return 2
    for label in labels:
        result = compare_scores(scores_a[label], scores_b[label], label_a="A", label_b="B", alpha=alpha)
        print(f"[{label}] A={run_a}: {_fmt(result.mean_a)}  B={run_b}: {_fmt(result.mean_b)}  (n={result.n})")
        if result.only_a or result.only_b:
            print(f"    left out: {result.only_a} item(s) scored only in A, {result.only_b} only in B")
        print(f"    {result.verdict}")
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
