"""Hydra callbacks of the app (``hydra.callbacks`` in ``modelfactory/conf/config.yaml``).

``SummaryCallback``: at the end of a multirun, one row per job (model, overridden parameters, items
ok/failed, mean and p95 latency, tokens in/out, throughput, cost in USD or "unknown"; for a task with
scorers, per scorer its mean, stderr, 95% CI and n, the items left unscored and a judge's cost, from
:func:`modelfactory.jobmetrics.job_scores`), printed and saved as ``summary.csv`` and ``summary.md`` in
the sweep directory, with ``report.html`` beside them (charts; see :mod:`modelfactory.report`). It reads
what the jobs left on disk (``job.json`` and the results file it names, through
:mod:`modelfactory.job.record`; ``.hydra/overrides.yaml``), so it works the same with every launcher whose jobs write to a file system the launching machine sees (basic, joblib,
submitit local/SLURM, Ray on a shared disk).
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .job.record import RESULTS_FILE as RESULTS_FILE  # the old name here, kept for imports of it
from .job.record import collect_jobs as collect_jobs  # moved to job/record.py (the reader of job files); kept
from .job.record import write_atomic

__all__ = ["SummaryCallback", "collect_jobs", "summarize_sweep"]

log = logging.getLogger("modelfactory.summary")

FIXED_COLUMNS = ["job", "model"]
METRIC_COLUMNS = [
    "ok",
    "failed",
    "mean_latency_s",
    "p95_latency_s",
    "tokens_in",
    "tokens_out",
    "tokens_reasoning",
    "elapsed_s",
    "items_per_s",
    "out_tokens_per_s",
    "cost_usd",
    "error",
]
UNKNOWN = "unknown"  # a cost nobody could price (a local model, no price map): never shown as 0


def _score_columns(jobs: list[dict[str, Any]]) -> list[str]:
    """Per scorer (in the order first seen): ``<label>`` (mean), ``<label>_stderr``, ``<label>_ci``
    (``low–high``), ``<label>_n``; then ``unscored`` and ``judge_cost_usd`` (when a judge ran). None for
    a sweep that scored nothing: its table keeps the columns it always had."""
    labels: list[str] = []
    for job in jobs:
        labels += [label for label in job.get("scores") or {} if label not in labels]
    if not labels:
        return []
    columns = [f"{label}{suffix}" for label in labels for suffix in ("", "_stderr", "_ci", "_n")]
    columns.append("unscored")
    if any(job.get("judge_cost_usd") is not None for job in jobs):
        columns.append("judge_cost_usd")
    return columns


def _num(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _score_cells(job: dict[str, Any], columns: list[str]) -> list[Any]:
    """The job's values of the score columns: empty where the job has no such scorer (or no scored item);
    ``unscored`` is the most items any one scorer left unscored (no reply, the scorer or judge failed)."""
    scores: dict[str, dict[str, Any]] = job.get("scores") or {}
    cells: list[Any] = []
    for column in columns:
        if column == "unscored":
            counts = [int(s["unscored"]) for s in scores.values() if isinstance(s.get("unscored"), int)]
            cells.append(max(counts) if counts else None)
        elif column == "judge_cost_usd":
            cells.append(_num(job.get("judge_cost_usd")))
        elif column in scores:
            cells.append(_num(scores[column].get("mean")))
        else:
            label, _, suffix = column.rpartition("_")
            summary = scores.get(label) or {}
            if suffix == "ci":
                low, high = summary.get("ci_low"), summary.get("ci_high")
                cells.append(f"{_num(low)}–{_num(high)}" if low is not None and high is not None else None)
            else:
                cells.append(_num(summary.get(suffix)))
    return cells


def _table(jobs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    keys: list[str] = []
    for job in jobs:
        for key in job["overrides"]:
            if key not in keys:
                keys.append(key)
    scored = _score_columns(jobs)
    metrics = METRIC_COLUMNS[:-1] + scored + METRIC_COLUMNS[-1:]  # the job error stays last
    header = FIXED_COLUMNS + keys + metrics
    rows = []
    for job in jobs:
        row = [job["job"], job["model"]] + [job["overrides"].get(k, "") for k in keys]
        row += [UNKNOWN if c == "cost_usd" and job[c] is None else job[c] for c in METRIC_COLUMNS[:-1]]
        row += _score_cells(job, scored) + [job["error"]]
        rows.append(["" if v is None else str(v) for v in row])
    return header, rows


def with_scores(jobs: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """The jobs with their ``scores`` ({label: summary}) and ``judge_cost_usd`` read from their dirs."""
    from .jobmetrics import job_scores

    for job in jobs:
        job["scores"], job["judge_cost_usd"] = job_scores(root / job["dir"]) if job.get("dir") else ({}, None)
    return jobs


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def summarize_sweep(sweep_dir: str | Path) -> str:
    """Write ``summary.csv`` and ``summary.md`` into ``sweep_dir``; return the markdown table."""
    root = Path(sweep_dir)
    from .merge import merge_jobs  # a sharded set of jobs: one row (and a word on missing shards)

    header, rows = _table(merge_jobs(with_scores(collect_jobs(root), root), root))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(root / "summary.csv", buf.getvalue())
    table = _markdown(header, rows)
    write_atomic(root / "summary.md", f"# Sweep summary: {root}\n\n{table}")
    return table


class SummaryCallback(Callback):
    """Prints and saves the sweep's summary table when a multirun ends. Never fails the sweep."""

    def __init__(self, print_table: bool = True) -> None:
        self.print_table = print_table

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            if not sweep_dir.is_dir():
                log.warning("summary: no sweep dir %s", sweep_dir)
                return
            table = summarize_sweep(sweep_dir)
        except Exception as exc:  # a summary problem must not turn a finished sweep into a failure
            log.warning("summary: could not build the sweep summary: %s: %s", type(exc).__name__, exc)
            return
        try:  # the same jobs as a page with charts (modelfactory/report.py)
            from .report import write_report

            write_report(sweep_dir)
        except Exception as exc:
            log.warning("summary: could not write report.html: %s: %s", type(exc).__name__, exc)
        if self.print_table:
            print(f"\nSweep summary ({sweep_dir}/summary.csv, summary.md, report.html):\n{table}", flush=True)
