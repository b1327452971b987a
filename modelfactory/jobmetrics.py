"""The numbers of one finished job, read back from its directory, for trackers and ``report.html``.

``summary.*`` carries mean/p95 latency and totals; a tracker and the report also want the median, the
error rate and the cost, per job. Everything comes from what the job left on disk (``results.jsonl``
through the runner's own reader, ``job.json``), so it is the same whichever launcher ran the job and
whichever process reads it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .runner import aggregate_rows, read_results

__all__ = ["job_info", "job_metrics", "percentile"]

RESULTS_FILE = "results.jsonl"
JOB_FILE = "job.json"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100), as the summary's p95; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def job_info(job_dir: str | Path) -> dict[str, Any]:
    """``job.json`` of a job (model, items, elapsed_s, runs, error), or ``{}`` if it is missing or torn."""
    path = Path(job_dir) / JOB_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _cost(rows: Iterable[Mapping[str, Any]], info: Mapping[str, Any]) -> float | None:
    """The job's cost when something priced it (``cost_usd`` in job.json or on rows); None otherwise,
    never a made-up 0."""
    if isinstance(info.get("cost_usd"), (int, float)):
        return float(info["cost_usd"])
    costs = [float(r["cost_usd"]) for r in rows if isinstance(r.get("cost_usd"), (int, float))]
    return round(sum(costs), 6) if costs else None


def job_metrics(job_dir: str | Path, results_file: str = RESULTS_FILE) -> dict[str, float | int | None]:
    """ok/failed counts, error rate, latency mean/p50/p95, tokens in/out, wall time, items/s, output
    tokens/s and cost of one job. Resumed jobs count the newest row of each item once, over all runs."""
    root = Path(job_dir)
    rows = list(read_results(root / results_file).values())
    info = job_info(root)
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
        "elapsed_s": elapsed,
        "items_per_s": round(done / elapsed, 3) if elapsed else None,
        "out_tokens_per_s": round(agg["tokens_out"] / elapsed, 1) if elapsed else None,
        "cost_usd": _cost(rows, info),
    }
