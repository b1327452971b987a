"""A job's scoring (``task.scorers``): checked at the start, each row scored as it is recorded, the
summaries written at the end, all with :mod:`modelfactory.eval`.

- **Start** (:meth:`JobScores.from_task`): every scorer config and every item's target checked before
  any model call (a :class:`~modelfactory.errors.ConfigError`: exit 2); ``task.primary_scorer`` (default:
  the first scorer) names the score a search maximizes.
- **Each row** (:meth:`JobScores.__call__`, the runner's ``score`` callable) gains
  ``"scores": {label: Score.to_dict()}``; an error row's entries are unscored (``value`` None), never 0.
- **Epochs** (``task.epochs`` > 1): each item runs that many times (ids ``<id>#<e>``, rows with
  ``item_id`` and ``epoch``), and an item's scores are reduced by ``task.epochs_reducer`` (``mean``,
  ``max``, ``pass@k``) before the summary. Each epoch is a new call of the same messages: sample
  (``generation.temperature`` > 0), and no response cache in ``read_write``/``replay`` mode (refused: it
  would answer every epoch with the first reply). A seeded run (``generation.seed``, else the model's
  ``seed``) gives each epoch its own seed, :func:`~modelfactory.eval.tasks.epoch_seed` (epoch 0 the
  seed itself, epoch e a hash of seed and e): the epochs differ, and a second run repeats them.
- **End** (:meth:`JobScores.finish`): the newest row of every item; a row without a scorer's entry (an
  earlier run's, before the scorer was added) is scored now and appended. Per scorer the
  :class:`~modelfactory.eval.metrics.Summary` goes into ``scores.json`` (as ``modelfactory score`` writes
  it, by the same code) and into ``job.json``: ``"scores": {label: Summary.to_dict()}`` and
  ``"primary": {"scorer": label, "value": mean | None}``.

:func:`job_items` reads a job's items: ``type: humaneval`` through :mod:`modelfactory.eval.tasks`, the
others through :func:`modelfactory.job.items.task_items`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, Problem
from ..eval.rescore import summarize_scores, write_summaries
from ..eval.score import Scorer
from ..eval.scoring import build_scorers, check_targets, score_row
from ..eval.tasks import epochs_of, expand_epochs, item_view
from ..eval.tasks import task_items as eval_task_items
from .items import Item, shard_items, task_items, task_shard
from .record import ResultsWriter, read_results

__all__ = ["JobScores", "job_items", "sampling_seed", "task_config"]


def task_config(cfg: Any) -> dict[str, Any]:
    """``cfg.task`` as a plain, resolved dict ({} when it is not a mapping)."""
    task = cfg.get("task") if isinstance(cfg, (Mapping, DictConfig)) else None
    if isinstance(task, DictConfig):
        task = OmegaConf.to_container(task, resolve=True)
    return {str(k): v for k, v in task.items()} if isinstance(task, Mapping) else {}


def job_items(cfg: Any, root: str | os.PathLike[str] | None = None) -> list[Item]:
    """A job's items: HumanEval (``task.type=humaneval``, then ``task.shards``) or a prompt / dataset;
    with ``task.epochs`` > 1 each item once per epoch, each epoch with its own seed when the run is seeded
    (:func:`sampling_seed`)."""
    task = task_config(cfg)
    epochs, _ = epochs_of(task)
    seed = None
    if epochs > 1:
        _check_samples_differ(cfg, epochs)
        seed = sampling_seed(cfg)
    if task.get("type") != "humaneval":
        return expand_epochs(task_items(cfg, root), epochs, seed)
    items = eval_task_items({**task, "epochs": 1})  # the shards split problems, each with all its epochs
    return expand_epochs(shard_items(items, *task_shard(cfg)), epochs, seed)


def sampling_seed(cfg: Any) -> int | None:
    """The seed a job's calls sample with: ``generation.seed``, else the model config's own ``seed`` (a
    per-call seed overrides it); None: unseeded. Epochs derive theirs from it
    (:func:`~modelfactory.eval.tasks.epoch_seed`): a repeated seed would repeat the first sample."""
    generation = cfg.get("generation") if isinstance(cfg, (Mapping, DictConfig)) else None
    seed = generation.get("seed") if isinstance(generation, (Mapping, DictConfig)) else None
    if seed is None:
        model = cfg.get("model") if isinstance(cfg, (Mapping, DictConfig)) else None
        seed = model.get("seed") if isinstance(model, (Mapping, DictConfig)) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _check_samples_differ(cfg: Any, epochs: int) -> None:
    """Epochs are new samples of the same messages: a response cache that answers (``read_write``,
    ``replay``) would give every epoch the first one's reply. (A seed is fine: each epoch gets its own.)"""
    model = cfg.get("model")
    cache = model.get("cache") if isinstance(model, (Mapping, DictConfig)) else None
    mode = cache.get("mode") if isinstance(cache, (Mapping, DictConfig)) else None
    if mode in ("read_write", "replay"):
        problem = Problem(
            "task.epochs",
            f"{epochs} epochs with model.cache.mode={mode}: the cache answers every epoch with the first reply",
            "model.cache.mode=off",
        )
        raise ConfigError([problem], title="epochs that would not sample")


@dataclass
class JobScores:
    """A job's scorers, what each sees of each item (by id), and the primary scorer's label."""

    scorers: list[Scorer]
    views: dict[str, dict[str, Any]]
    primary: str
    reducer: str | None = None  # task.epochs_reducer when task.epochs > 1: rows grouped by item_id

    @classmethod
    def from_task(cls, task: Mapping[str, Any], items: list[Item]) -> JobScores | None:
        """The task's scorers, checked with its items' targets; None for a task without ``scorers``."""
        specs = task.get("scorers")
        if not specs:
            return None
        scorers = build_scorers(specs, key="task.scorers")
        views = {item.id: item_view(item) for item in items}
        check_targets(list(views.values()), scorers)
        labels = [s.label for s in scorers]
        primary = task.get("primary_scorer") or labels[0]
        if primary not in labels:
            raise ConfigError(
                [Problem("task.primary_scorer", f"no scorer labelled {primary!r}", f"one of: {labels}")],
                title="invalid task",
            )
        epochs, reducer = epochs_of(task)
        return cls(scorers, views, str(primary), reducer if epochs > 1 else None)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.scorers]

    @property
    def workers(self) -> int:
        """Threads the runner scores rows with (``run_items(score_workers=...)``): 2 with a ``code``
        scorer (each row a sandboxed subprocess, ~10-30 ms: one thread capped a fast API run at ~30-90
        rows/s), 1 otherwise: string scorers take microseconds, and a ``model_graded`` judge may be a
        local model, never called from two threads."""
        names = {s.config.name for s in self.scorers}
        return 2 if "code" in names and "model_graded" not in names else 1

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row with its ``scores`` (an error row: unscored entries saying why)."""
        reply = None if row.get("error") else row.get("content")
        view = self.views.get(str(row["id"]), {"id": row["id"]})
        if "epoch" in view:  # task.epochs > 1: which item, which sample
            row.update(item_id=view["item_id"], epoch=view["epoch"])
        reply = reply if isinstance(reply, str) else None
        row.update(score_row(self.scorers, view, reply, row.get("logprobs") if reply is not None else None))
        return row

    def finish(self, results: Path, fsync: bool = True) -> dict[str, Any]:
        """Rows lacking a scorer's entry scored and appended; ``scores.json`` written; what ``job.json``
        gains (``scores``, ``primary``, and ``judge_cost_usd`` when a judge was priced)."""
        done = read_results(results)  # in the order rows arrived (threads: as calls finished)
        rows = [done[i] for i in self.views if i in done]  # the items' order: the same rows, the same CI
        unscored = [r for r in rows if not set(self.labels) <= set(r.get("scores") or {})]
        if unscored:  # an earlier run's rows, before these scorers: newest row wins, so append
            writer = ResultsWriter(results, fsync)
            try:
                for row in unscored:
                    writer.write(self(row))
            finally:
                writer.close()
        groups = [self.views[str(r["id"])].get("item_id", r["id"]) for r in rows] if self.reducer else None
        summaries, judge_cost = summarize_scores(
            [r.get("scores") or {} for r in rows], self.labels, groups=groups, reducer=self.reducer or "mean"
        )
        write_summaries(results.parent, summaries, judge_cost)
        out: dict[str, Any] = {
            "scores": {label: s.to_dict() for label, s in summaries.items()},
            "primary": {"scorer": self.primary, "value": summaries[self.primary].mean},
        }
        if judge_cost is not None:
            out["judge_cost_usd"] = round(judge_cost, 6)
        return out
