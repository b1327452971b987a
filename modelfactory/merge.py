"""Sharded sweeps put back together: one row, and one results file, per model and parameter set.

A dataset spread over jobs (``task.shards=N -m 'task.shard=range(0,N)'``, on any launcher) leaves N job
directories, each with its share of the rows. :func:`merge_jobs` turns the sweep summary's per-job
records into one record per model/parameter set, its metrics computed again over the rows of every shard
(percentiles do not average; nor do scores: a scored task's mean, stderr, CI and n are computed again
over every shard's scored rows, :func:`merged_scores`), and says which shard is missing, failed or did
not finish.
:func:`merge_sweep` (``modelfactory merge <sweep dir>``) also writes the merged ``results.jsonl`` of each
set, for scoring downstream. A job that is not sharded is a set of one: its record passes through as is.

A job's shard is what it recorded in ``job.json`` (``{"shard": {"index", "count"}}``); for a job that
died before writing it, its saved config (``.hydra/config.yaml``: ``task.shard``, ``task.shards``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .job.record import (
    RESULTS_FILE,
    aggregate_rows,
    atomic_open,
    collect_jobs,
    percentile,
    read_job,
    read_results,
    results_path,
    write_json,
)
from .jobmetrics import job_metrics

__all__ = ["MergedSet", "merge_jobs", "merge_sweep", "merged_scores", "shard_label"]

SHARD_KEY = "task.shard"  # the override that differs between the shards of one set
MERGED_DIR = "merged"


@dataclass
class MergedSet:
    """One model/parameter set of a sweep and the jobs (shards) that ran it."""

    model: str | None
    overrides: dict[str, str]  # without task.shard
    shards: int  # how many shards the set was cut into (1: not sharded)
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)  # shard index -> the job's summary record
    problems: list[str] = field(default_factory=list)
    path: Path | None = None  # merge_sweep: the folder its merged results.jsonl went to

    @property
    def complete(self) -> bool:
        return not self.problems

    def slug(self) -> str:
        """A file-system-safe, stable folder name for the set (``merged/<slug>/results.jsonl``)."""
        parts = [str(self.model or "job")] + [f"{k}={v}" for k, v in sorted(self.overrides.items())]
        text = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", ",".join(parts)).strip("_") or "job"
        if len(text) > 100:  # a long parameter set: a readable head and a hash of the whole
            text = text[:88] + "-" + hashlib.sha256(text.encode()).hexdigest()[:10]
        return text


def _load_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _saved_task(job_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``task`` and ``output`` of the job's saved config (empty mappings when unreadable)."""
    saved = _load_yaml(job_dir / ".hydra" / "config.yaml")
    saved = saved if isinstance(saved, dict) else {}
    task, output = saved.get("task"), saved.get("output")
    return (task if isinstance(task, dict) else {}), (output if isinstance(output, dict) else {})


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def job_shard(job_dir: Path) -> tuple[int, int] | None:
    """``(index, count)`` of a sharded job; None for a job that is not sharded (or cannot tell)."""
    record = read_job(job_dir) or {}
    shard = record.get("shard")
    if isinstance(shard, Mapping):
        index, count = _as_int(shard.get("index")), _as_int(shard.get("count"))
    else:
        task, _ = _saved_task(job_dir)
        index, count = _as_int(task.get("shard", 0)), _as_int(task.get("shards", 1))
    if index is None or count is None or count <= 1:
        return None
    return index, count


def _rows_path(job_dir: Path) -> Path:
    _, output = _saved_task(job_dir)
    configured = output.get("results_file")
    name = configured if isinstance(configured, str) and configured and "${" not in configured else None
    return results_path(job_dir, read_job(job_dir), name)


def shard_label(merged: MergedSet) -> str:
    """What the summary shows in the ``task.shard`` column of a merged row: shards done of shards."""
    done = sum(1 for j in merged.jobs.values() if not j.get("error"))
    return f"{done}/{merged.shards}"


def _group(jobs: Iterable[dict[str, Any]], root: Path) -> list[tuple[MergedSet | None, dict[str, Any]]]:
    """Sharded jobs gathered into sets (in order of their first job); unsharded ones left as they are."""
    out: list[tuple[MergedSet | None, dict[str, Any]]] = []
    sets: dict[tuple[Any, ...], MergedSet] = {}
    for job in jobs:
        shard = job_shard(root / job["dir"])
        if shard is None:
            out.append((None, job))
            continue
        index, count = shard
        overrides = {k: str(v) for k, v in job["overrides"].items() if k != SHARD_KEY}
        key = (job["model"], tuple(sorted(overrides.items())))
        merged = sets.get(key)
        if merged is None:
            merged = sets[key] = MergedSet(job["model"], overrides, count)
            out.append((merged, job))
        if count != merged.shards:
            merged.problems.append(f"job {job['job']} was cut into {count} shards, not {merged.shards}")
        if index in merged.jobs:
            merged.problems.append(
                f"shard {index} ran twice (jobs {merged.jobs[index]['job']}, {job['job']})"
            )
        merged.jobs[index] = job
    for merged in sets.values():
        missing = [i for i in range(merged.shards) if i not in merged.jobs]
        if missing:
            merged.problems.insert(0, f"missing shard(s) {', '.join(map(str, missing))} of {merged.shards}")
        for index in sorted(merged.jobs):
            error = merged.jobs[index].get("error")
            if error:
                merged.problems.append(f"shard {index} failed: {error}")
    return out


def _merged_rows(merged: MergedSet, root: Path) -> dict[str, dict[str, Any]]:
    """Every row of the set's shards, by id, in shard order (a repeated id: the later shard's row), each
    with its ``scores``: the job's, with those ``modelfactory score`` wrote later over them."""
    from .eval.rescore import with_rescores

    rows: dict[str, dict[str, Any]] = {}
    for index in sorted(merged.jobs):
        job_dir = root / merged.jobs[index]["dir"]
        rows.update(with_rescores(job_dir, read_results(_rows_path(job_dir))))
    return rows


def _epoch_reducer(merged: MergedSet, root: Path) -> str | None:
    """``task.epochs_reducer`` of a set run with ``task.epochs`` > 1 (its first shard's saved task); None:
    one sample per item (or no readable task)."""
    from .errors import ConfigError
    from .eval.tasks import epochs_of

    for index in sorted(merged.jobs):
        task, _ = _saved_task(root / merged.jobs[index]["dir"])
        if task:
            try:
                epochs, reducer = epochs_of(task)
            except ConfigError:
                return None
            return reducer if epochs > 1 else None
    return None


def _in_task_order(merged: MergedSet, root: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows in the order of the task's items (the saved task, read as ``modelfactory score`` reads
    it), so the bootstrap resamples them as it does the rows of one unsharded run; ids the task does not
    have, after them. Unreadable task: as they are."""
    from .errors import ModelFactoryError
    from .eval.rescore import saved_task
    from .eval.tasks import task_items

    first = root / merged.jobs[min(merged.jobs)]["dir"]
    try:
        order = {item.id: i for i, item in enumerate(task_items(saved_task(first)))}
    except (ModelFactoryError, OSError, ValueError):
        return rows
    return sorted(rows, key=lambda r: order.get(str(r.get("id")), len(order)))  # stable: unknown ids last


def merged_scores(
    merged: MergedSet, root: Path, rows: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], float | None]:
    """Per scorer label (in the order the rows name them), the set's score summary computed again over
    every shard's rows (mean, stderr, bootstrap CI and n over all of them: not an average of the shards'
    means), by the code a job's end and ``modelfactory score`` use, the rows in the task's item order: the
    numbers an unsharded run of the same rows gives; and the judges' cost. ``({}, None)`` for rows without
    scores. Epochs (``task.epochs`` > 1) are reduced per item first, as in a job."""
    from .eval.rescore import summarize_scores

    labels: list[str] = []
    for row in rows:
        scores = row.get("scores")
        if isinstance(scores, Mapping):
            labels += [str(label) for label in scores if label not in labels]
    if not labels:
        return {}, None
    reducer = _epoch_reducer(merged, root)
    rows = _in_task_order(merged, root, rows)
    groups = None
    if reducer is not None:  # rows of one item's epochs: <id>#<e>, with item_id when scored as they ran
        groups = [str(r.get("item_id") or str(r["id"]).rpartition("#")[0] or r["id"]) for r in rows]
    row_scores: list[Mapping[str, Mapping[str, Any]]] = [
        r["scores"] if isinstance(r.get("scores"), Mapping) else {} for r in rows
    ]
    summaries, judge = summarize_scores(
        row_scores,
        labels,
        groups=groups,
        reducer=reducer or "mean",
    )
    return {label: s.to_dict() for label, s in summaries.items()}, judge


def _record(merged: MergedSet, root: Path) -> dict[str, Any]:
    """The summary record of a set: the per-job record's keys, its metrics over all the shards' rows."""
    members = [merged.jobs[i] for i in sorted(merged.jobs)]
    numbers = sorted(j["job"] for j in members if j["job"] is not None)
    rows = list(_merged_rows(merged, root).values())
    metrics = aggregate_rows(rows)
    latencies = [float(r["latency_s"]) for r in rows if not r.get("error") and _is_number(r.get("latency_s"))]
    costs = [job_metrics(root / j["dir"])["cost_usd"] for j in members]  # priced per job, or None
    elapsed = round(sum(float(j.get("elapsed_s") or 0.0) for j in members), 4) or None
    done = metrics["ok"] + metrics["failed"]
    scores, judge = merged_scores(merged, root, rows)
    return {
        "job": ",".join(map(str, numbers)) if numbers else None,
        "dir": ",".join(j["dir"] for j in members),
        "dirs": [j["dir"] for j in members],  # each shard's job dir, in shard order
        "model": merged.model,
        "overrides": {**merged.overrides, SHARD_KEY: shard_label(merged)},
        **metrics,
        "elapsed_s": elapsed,  # job time summed over the shards: items_per_s is per job, as unsharded
        "items_per_s": round(done / elapsed, 3) if elapsed else None,
        "out_tokens_per_s": round(metrics["tokens_out"] / elapsed, 1) if elapsed else None,
        "error": "; ".join(merged.problems) or None,
        "p50_latency_s": percentile(latencies, 50),
        "cost_usd": round(sum(float(c) for c in costs if c is not None), 6)
        if any(c is not None for c in costs)
        else None,
        "scores": scores,  # {label: Summary.to_dict()} over every shard's rows ({}: not scored)
        "judge_cost_usd": None if judge is None else round(judge, 6),
    }


def merge_jobs(jobs: list[dict[str, Any]], sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The sweep summary's job records (:func:`modelfactory.job.record.collect_jobs`) with each sharded set
    merged into one record; unsharded jobs unchanged. Where a shard is missing or failed, ``error`` says so."""
    root = Path(sweep_dir)
    return [job if merged is None else _record(merged, root) for merged, job in _group(jobs, root)]


def merge_sweep(sweep_dir: str | Path, out_dir: str | Path | None = None) -> list[MergedSet]:
    """Write ``<out_dir>/<set>/results.jsonl`` (every row of the set's shards) and ``merged.json`` (which
    jobs, which shards are missing or failed, the metrics) for every model/parameter set of the sweep.
    ``out_dir`` defaults to ``<sweep_dir>/merged``. Unsharded jobs are written as sets of one."""
    root = Path(sweep_dir)
    out = Path(out_dir) if out_dir is not None else root / MERGED_DIR
    sets: list[MergedSet] = []
    for merged, job in _group(collect_jobs(root), root):
        if merged is None:  # not sharded: a set of one
            merged = MergedSet(job["model"], {k: str(v) for k, v in job["overrides"].items()}, 1, {0: job})
            if job.get("error"):
                merged.problems.append(f"job {job['job']} failed: {job['error']}")
        sets.append(merged)
    used: set[str] = set()
    for merged in sets:
        slug = merged.slug()
        while slug in used:  # two sets the same once made file-system safe
            slug += "_"
        used.add(slug)
        target = out / slug
        target.mkdir(parents=True, exist_ok=True)
        merged.path = target
        rows = _merged_rows(merged, root)
        with atomic_open(target / RESULTS_FILE) as f:
            for row in rows.values():
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        record = _record(merged, root)
        write_json(
            target / "merged.json",
            {
                "model": merged.model,
                "overrides": merged.overrides,
                "shards": merged.shards,
                "jobs": {str(i): merged.jobs[i]["dir"] for i in sorted(merged.jobs)},
                "complete": merged.complete,
                "problems": merged.problems,
                "items": len(rows),
                **{
                    k: record[k] for k in ("ok", "failed", "mean_latency_s", "p50_latency_s", "p95_latency_s")
                },
                **{k: record[k] for k in ("tokens_in", "tokens_out", "cost_usd", "elapsed_s")},
                **({"scores": record["scores"]} if record["scores"] else {}),
                **(
                    {"judge_cost_usd": record["judge_cost_usd"]}
                    if record["judge_cost_usd"] is not None
                    else {}
                ),
            },
        )
    return sets
