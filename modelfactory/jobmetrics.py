"""The numbers of one finished job, read back from its directory, for trackers and ``report.html``.

``summary.*`` carries mean/p95 latency and totals; a tracker and the report also want the median, the
error rate and the cost, per job. Everything comes from what the job left on disk, through
:mod:`modelfactory.job.record` (``job.json`` and the results file it names), so it is the same whichever
launcher ran the job and whichever process reads it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .job.record import (
    SCORES_SUMMARY_FILE,
    aggregate_rows,
    percentile,
    read_job,
    read_json_object,
    read_results,
    results_path,
)

__all__ = ["job_metrics", "job_scores", "score_metrics"]

SUMMARY_KEYS = ("mean", "stderr", "ci_low", "ci_high", "n", "unscored")


def _cost(rows: Iterable[Mapping[str, Any]], info: Mapping[str, Any]) -> float | None:
    """The job's cost when something priced it (``cost_usd`` in job.json or on rows); None otherwise,
    never a made-up 0."""
    if isinstance(info.get("cost_usd"), (int, float)):
        return float(info["cost_usd"])
    costs = [float(r["cost_usd"]) for r in rows if isinstance(r.get("cost_usd"), (int, float))]
    return round(sum(costs), 6) if costs else None


def job_metrics(job_dir: str | Path, results_file: str | None = None) -> dict[str, float | int | None]:
    """ok/failed counts, error rate, latency mean/p50/p95, tokens in/out, wall time, items/s, output
    tokens/s and cost of one job. Resumed jobs count the newest row of each item once, over all runs.
    ``results_file``: the job's ``output.results_file``, for a job that died before its ``job.json``."""
    root = Path(job_dir)
    info = read_job(root) or {}
    rows = list(read_results(results_path(root, info, results_file)).values())
    agg = aggregate_rows(rows)
    latencies = [
        float(r["latency_s"])
        for r in rows
        if not r.get("error") and isinstance(r.get("latency_s"), (int, float))
    ]
    done = agg["ok"] + agg["failed"]
    elapsed = info.get("elapsed_s") if isinstance(info.get("elapsed_s"), (int, float)) else None
    return {
        "ok": agg["ok"],
        "failed": agg["failed"],
        "error_rate": round(agg["failed"] / done, 4) if done else None,
        "mean_latency_s": agg["mean_latency_s"],
        "p50_latency_s": percentile(latencies, 50),
        "p95_latency_s": agg["p95_latency_s"],
        "tokens_in": agg["tokens_in"],
        "tokens_out": agg["tokens_out"],
        "tokens_reasoning": agg["tokens_reasoning"],  # the part of tokens_out spent reasoning
        "elapsed_s": elapsed,
        "items_per_s": round(done / elapsed, 3) if elapsed else None,
        "out_tokens_per_s": round(agg["tokens_out"] / elapsed, 1) if elapsed else None,
        "cost_usd": _cost(rows, info),
    }


def _summaries(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``{label: Summary.to_dict()}`` entries of a mapping (other keys, such as a cost, skipped)."""
    return {
        str(label): {k: summary.get(k) for k in SUMMARY_KEYS}
        for label, summary in doc.items()
        if isinstance(summary, Mapping) and "mean" in summary
    }


def _row_judge_cost(rows: Iterable[Mapping[str, Any]]) -> float | None:
    """The judge's cost summed over the rows' scores (``metadata.judge_cost_usd``); None if none priced."""
    costs = [
        float(score["metadata"]["judge_cost_usd"])
        for row in rows
        for score in (row.get("scores") or {}).values()
        if isinstance(score, Mapping)
        and isinstance(score.get("metadata"), Mapping)
        and isinstance(score["metadata"].get("judge_cost_usd"), (int, float))
    ]
    return round(math.fsum(costs), 6) if costs else None


def job_scores(job_dir: str | Path) -> tuple[dict[str, dict[str, Any]], float | None]:
    """Per scorer label, the job's score summary (mean, stderr, ci_low, ci_high, n, unscored), and the
    judge's cost in USD (None: no judge, or nothing priced it). From ``job.json["scores"]`` (the runner
    scored the rows), else ``scores.json`` (``modelfactory score`` ran on the job dir later); the judge's
    cost from either file's ``judge_cost_usd``, else summed from the rows' scores. ``({}, None)``: not
    scored (a sweep without scorers keeps its table as it was)."""
    root = Path(job_dir)
    info = read_job(root) or {}
    saved = read_json_object(root / SCORES_SUMMARY_FILE)
    scores = _summaries(info.get("scores") or {}) if isinstance(info.get("scores"), Mapping) else {}
    if not scores:
        scores = _summaries(saved)
    judge = info.get("judge_cost_usd", saved.get("judge_cost_usd"))
    if not isinstance(judge, (int, float)) and scores:
        judge = _row_judge_cost(read_results(results_path(root, info)).values())
    return scores, float(judge) if isinstance(judge, (int, float)) else None


def score_metrics(job_dir: str | Path) -> dict[str, float]:
    """A tracker's score metrics of one job: ``score/<label>`` (the mean), ``score/<label>_stderr``,
    ``score/<label>_ci_low``, ``score/<label>_ci_high``, ``score/<label>_n``, ``score/<label>_unscored``
    and ``score/judge_cost_usd``; an unknown number (no scored item) is left out, never logged as 0."""
    scores, judge = job_scores(job_dir)
    out: dict[str, float] = {}
    for label, summary in scores.items():
        for key, suffix in zip(
            SUMMARY_KEYS, ("", "_stderr", "_ci_low", "_ci_high", "_n", "_unscored"), strict=True
        ):
            value = summary.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[f"score/{label}{suffix}"] = float(value)
    if judge is not None:
        out["score/judge_cost_usd"] = judge
    return out
