"""The numbers of one finished job, read back from its directory, for trackers and ``report.html``.

``summary.*`` carries mean/p95 latency and totals; a tracker and the report also want the median, the
error rate and the cost, per job. Everything comes from what the job left on disk, through
:mod:`modelfactory.job.record` (``job.json`` and the results file it names), so it is the same whichever
launcher ran the job and whichever process reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .job.record import aggregate_rows, percentile, read_job, read_results, results_path

__all__ = ["job_metrics"]


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
