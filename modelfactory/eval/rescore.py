"""Score a finished run again without calling any model: ``modelfactory score RUN_DIR [scorer=...]``.

Reads the run's replies (``results.jsonl``, through :mod:`modelfactory.job.record`) and its task (the
saved ``.hydra/config.yaml``), scores every reply, and writes ``scores.jsonl`` (one row per item:
``{"id", "scores": {label: {value, answer, explanation, error}}}``) and ``scores.json`` (per scorer: the
:class:`~modelfactory.eval.metrics.Summary`) next to the results. A row whose call failed is unscored.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Problem
from ..job.record import (
    SCORES_FILE,
    SCORES_SUMMARY_FILE,
    read_job,
    read_json_object,
    read_results,
    results_path,
)
from .metrics import Summary, reduce_epochs, summarize, summarize_epochs
from .score import Scorer
from .scoring import build_scorers, check_targets, score_many
from .tasks import epochs_of, item_view, task_items

__all__ = [
    "SCORES_FILE",
    "SCORES_SUMMARY_FILE",
    "Rescored",
    "read_scores",
    "rescore_run",
    "saved_task",
    "score_rows",
    "summarize_scores",
    "with_rescores",
    "write_summaries",
]


@dataclass
class Rescored:
    run_dir: Path
    summaries: dict[str, Summary]
    rows: int
    judge_cost_usd: float | None


def saved_task(run_dir: Path) -> dict[str, Any]:
    """The run's task config, resolved, from the ``.hydra/config.yaml`` Hydra saved in the run dir."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError(
            [Problem("run_dir", f"no {path} (the run's saved config)", "give the dir of a run.py job")],
            title="cannot score",
        )
    try:
        cfg = OmegaConf.load(path)
        node = cfg.get("task") if isinstance(cfg, DictConfig) else None
        task = OmegaConf.to_container(node, resolve=True) if node is not None else None
    except (OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(
            [Problem("task", f"cannot read the saved task: {exc}", "")], title="cannot score"
        ) from None
    if not isinstance(task, dict):
        raise ConfigError(
            [Problem("task", f"the saved config has no task: {task!r}", "")], title="cannot score"
        )
    saved = {str(k): v for k, v in task.items()}
    dataset = saved.get("path")
    if isinstance(dataset, str) and dataset and not Path(dataset).is_absolute():
        launched = _launch_dir(run_dir)  # a relative dataset path meant the directory run.py ran in
        if launched is not None and (launched / dataset).is_file():
            saved["path"] = str(launched / dataset)
    return saved


def _launch_dir(run_dir: Path) -> Path | None:
    """The directory the run was launched from (``hydra.runtime.cwd`` in ``.hydra/hydra.yaml``)."""
    import yaml

    try:
        saved = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text(encoding="utf-8"))
        return Path(saved["hydra"]["runtime"]["cwd"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def parse_overrides(args: Sequence[str]) -> tuple[list[dict[str, Any]] | None, list[Problem]]:
    """``scorer=includes`` / ``scorer=exact,includes`` and ``scorer.KEY=VALUE`` (YAML values) into
    scorer configs; None when no ``scorer=`` was given (then the task's own ``scorers`` apply)."""
    import yaml

    names: list[str] | None = None
    options: dict[str, Any] = {}
    problems: list[Problem] = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            problems.append(Problem(arg, "expected KEY=VALUE", "scorer=includes scorer.ignore_case=false"))
        elif key == "scorer":
            names = [n.strip() for n in value.split(",") if n.strip()]
        elif key.startswith("scorer."):
            try:
                options[key[len("scorer.") :]] = yaml.safe_load(value) if value else ""
            except yaml.YAMLError:
                options[key[len("scorer.") :]] = value
        else:
            problems.append(Problem(key, "unknown option", "scorer=NAME and scorer.KEY=VALUE"))
    if names is None:
        if options:
            problems.append(
                Problem(
                    "scorer",
                    "scorer.KEY=VALUE given without scorer=NAME",
                    "scorer=pattern scorer.pattern=...",
                )
            )
        return None, problems
    if not names:
        problems.append(Problem("scorer", "no scorer named", "scorer=includes"))
    if options and len(names) > 1:
        problems.append(
            Problem("scorer", "scorer.KEY=VALUE options with several scorers", "one scorer at a time")
        )
    return [{"name": n, **options} for n in names], problems


def rescore_run(
    run_dir: str | os.PathLike[str],
    scorers: Sequence[Mapping[str, Any] | str] | None = None,
    *,
    workers: int = 2,
    **context: Any,
) -> Rescored:
    """Score every reply of ``run_dir`` with ``scorers`` (default: the task's ``scorers``) and write the
    scores next to the results. ``context`` reaches the scorer factories (``judge=`` a Model)."""
    run = Path(run_dir)
    task = saved_task(run)
    specs = scorers if scorers is not None else task.get("scorers")
    if not specs:
        raise ConfigError(
            [Problem("scorer", "neither the command nor the run's task names a scorer", "scorer=includes")],
            title="cannot score",
        )
    built = build_scorers(specs, key="scorer" if scorers is not None else "task.scorers", **context)
    items = {item.id: item_view(item) for item in task_items(task)}
    check_targets(list(items.values()), built)
    job = read_job(run)
    rows = read_results(results_path(run, job))
    if not rows:
        raise ConfigError(
            [Problem("run_dir", f"no results in {results_path(run, job)}", "")], title="cannot score"
        )
    epochs, reducer = epochs_of(task)
    return score_rows(run, built, items, rows, workers=workers, reducer=reducer if epochs > 1 else None)


def score_rows(
    run: Path,
    scorers: Sequence[Scorer],
    items: Mapping[str, Mapping[str, Any]],
    rows: Mapping[str, Mapping[str, Any]],
    *,
    workers: int = 2,
    reducer: str | None = None,
) -> Rescored:
    """The core of :func:`rescore_run`: score ``rows`` (id -> newest results row) against ``items``
    (id -> :func:`~modelfactory.eval.tasks.item_view`), write ``scores.jsonl`` and ``scores.json``;
    ``reducer`` (``task.epochs`` > 1): each item's epochs reduced by it, grouped by ``item_id``. Rows are
    taken in the items' order (ids not among them last), not the order they were written (as calls
    finished): the bootstrap CI of the same scores is the same whichever order the calls ended in."""
    order = {item_id: i for i, item_id in enumerate(items)}
    rows = dict(sorted(rows.items(), key=lambda kv: order.get(kv[0], len(order))))
    pairs, logprobs = [], []
    for item_id, row in rows.items():
        item = items.get(item_id, {"id": item_id})
        reply = row.get("content") if not row.get("error") else None
        pairs.append((reply if isinstance(reply, str) else None, item))
        logprobs.append(row.get("logprobs") if not row.get("error") else None)
    per_scorer = {s.label: score_many(s, pairs, workers=workers, logprobs=logprobs) for s in scorers}
    out_rows: list[dict[str, Any]] = []
    for i, item_id in enumerate(rows):
        scores: dict[str, dict[str, Any]] = {}
        for label, results in per_scorer.items():
            score = results[i]
            if item_id not in items and score.error is None:
                score.error = f"item {item_id!r} is not in the task's items"
                score.value = None
            scores[label] = score.to_dict()
        out_rows.append({"id": item_id, "scores": scores})
    groups = [str(items.get(i, {}).get("item_id", i)) for i in rows] if reducer else None
    summaries, judge_cost = summarize_scores(
        [r["scores"] for r in out_rows], list(per_scorer), groups=groups, reducer=reducer or "mean"
    )
    _write_jsonl(run / SCORES_FILE, _merged_rows(run / SCORES_FILE, out_rows))
    write_summaries(run, summaries, judge_cost)
    return Rescored(run, summaries, len(out_rows), judge_cost)


def summarize_scores(
    row_scores: Sequence[Mapping[str, Mapping[str, Any]]],
    labels: Sequence[str],
    *,
    groups: Sequence[str] | None = None,
    reducer: str = "mean",
) -> tuple[dict[str, Summary], float | None]:
    """Per scorer label, the :class:`Summary` of the rows' ``scores`` (``Score.to_dict()`` each; an
    entry with an ``error``, or missing, is unscored), and the judges' cost (None: no judge, or one
    unpriced). ``groups`` (``task.epochs`` > 1): each row's item id; an item's epochs are reduced with
    ``reducer`` first (:func:`~modelfactory.eval.metrics.summarize_epochs`). What ``modelfactory score``
    and a job's end both compute, so they agree by construction."""
    summaries = {}
    costs: list[float | None] = []
    for label in labels:
        values: list[float | None] = []
        for scores in row_scores:
            score = scores.get(label)
            ok = isinstance(score, Mapping) and score.get("error") is None
            value = score.get("value") if ok and isinstance(score, Mapping) else None
            values.append(float(value) if isinstance(value, (int, float)) else None)
            metadata = score.get("metadata") if isinstance(score, Mapping) else None
            if isinstance(metadata, Mapping) and "judge_cost_usd" in metadata:
                costs.append(metadata["judge_cost_usd"])
        if groups is None:
            summaries[label] = summarize(values)
            continue
        per_item: dict[str, list[float | None]] = {}
        for group, value in zip(groups, values, strict=True):
            per_item.setdefault(group, []).append(value)
        summaries[label] = summarize_epochs(per_item, reducer)
    known = [c for c in costs if c is not None]
    return summaries, math.fsum(known) if costs and len(known) == len(costs) else None


def write_summaries(run: Path, summaries: Mapping[str, Summary], judge_cost: float | None) -> None:
    """``scores.json``: each scorer's summary over an earlier file's (other scorers' entries are kept);
    ``judge_cost_usd`` when a judge was priced."""
    summary_doc: dict[str, Any] = read_json_object(run / SCORES_SUMMARY_FILE)
    summary_doc.update({label: s.to_dict() for label, s in summaries.items()})
    if judge_cost is not None:
        summary_doc["judge_cost_usd"] = judge_cost
    _write_text(run / SCORES_SUMMARY_FILE, json.dumps(summary_doc, indent=2) + "\n")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _merged_rows(path: Path, new_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The new scores over an earlier ``scores.jsonl``: another scorer's columns are kept, the same
    scorer's replaced, so ``score scorer=a`` then ``score scorer=b`` leaves both."""
    old = {str(r.get("id")): r.get("scores") or {} for r in _read_jsonl(path)}
    return [{"id": r["id"], "scores": {**old.get(str(r["id"]), {}), **r["scores"]}} for r in new_rows]


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a file


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    _write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def with_rescores(
    run_dir: str | os.PathLike[str], rows: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """The run's newest results rows (``rows``, else read from its results file), each row's ``scores``
    (written by the job as it ran) with ``scores.jsonl``'s (written by ``modelfactory score``) over
    them: a re-scored scorer's column replaces the job's, another scorer's is added. A row with no
    score at all keeps ``scores`` as it was."""
    run = Path(run_dir)
    if rows is None:
        rows = read_results(results_path(run, read_job(run)))
    later = {
        str(r.get("id")): r["scores"]
        for r in _read_jsonl(run / SCORES_FILE)
        if isinstance(r.get("scores"), Mapping)
    }
    out: dict[str, dict[str, Any]] = {}
    for item_id, row in rows.items():
        own = row.get("scores")
        if item_id in later:
            row = {**row, "scores": {**(own if isinstance(own, Mapping) else {}), **later[item_id]}}
        out[item_id] = dict(row)
    return out


def read_scores(run_dir: str | os.PathLike[str]) -> dict[str, dict[str, float | None]]:
    """Per scorer label: item id -> score value (None when unscored), from the run's results rows
    (``scores`` written by the job as it ran) with ``scores.jsonl``'s (written by ``modelfactory score``)
    over them: a re-scored scorer's column replaces the job's, another scorer's is added. A run of
    ``task.epochs`` > 1 gives one value per item, its epochs reduced by ``task.epochs_reducer``: a paired
    comparison pairs items, not epochs (pairing each epoch would count an item N times and narrow the CI)."""
    run = Path(run_dir)
    rows: dict[str, dict[str, Any]] = {}
    item_of: dict[str, str] = {}
    for row_id, row in with_rescores(run).items():
        if isinstance(row.get("scores"), Mapping):
            rows[str(row_id)] = dict(row["scores"])
            item_of[str(row_id)] = str(row.get("item_id", row_id))
    for row in _read_jsonl(run / SCORES_FILE):  # a re-scored id the results file no longer has
        if isinstance(row.get("scores"), Mapping) and str(row.get("id")) not in rows:
            rows[str(row.get("id"))] = dict(row["scores"])
    per_row: dict[str, dict[str, float | None]] = {}
    for row_id, scores in rows.items():
        for label, score in scores.items():
            value = score.get("value") if isinstance(score, Mapping) and not score.get("error") else None
            per_row.setdefault(label, {})[row_id] = value
    reducer = _epochs_reducer(run) if any(item_of.get(i, i) != i for i in rows) else None
    if reducer is None:
        return per_row
    out: dict[str, dict[str, float | None]] = {}
    for label, values in per_row.items():
        grouped: dict[str, list[float | None]] = {}
        for row_id, value in values.items():
            grouped.setdefault(item_of.get(row_id, row_id), []).append(value)
        out[label] = {item: reduce_epochs(v, reducer) for item, v in grouped.items()}
    return out


def _epochs_reducer(run: Path) -> str:
    """The run's ``task.epochs_reducer`` (``mean`` when its saved config cannot say)."""
    try:
        return epochs_of(saved_task(run))[1]
    except ConfigError:
        return "mean"
