"""Items in, replies out: a dataset (or one prompt) run through a model, recorded row by row.

Items come from :mod:`modelfactory.job.items`; rows go through :mod:`modelfactory.job.record`.

- **Concurrency**: API models with a native async client (OpenAI, Azure, LiteLLM, HfApiModel) are
  called with ``agenerate`` from ``concurrency`` tasks on one event loop (mode ``async``); other models
  from a thread pool (mode ``threads``). Either way ``concurrency`` requests are in flight and a model's
  own ``requests_per_minute`` limiter is shared by all of them. A model with
  ``generate_batch(conversations, ...)`` (local models) gets ``local_batch_size`` items per call (with a
  response cache on, only if it declares ``batch_uses_cache``: otherwise the cache would be bypassed); a
  local model without it is called sequentially.
- **Results**: one JSON row per item appended to ``results.jsonl`` as it finishes, flushed and fsynced,
  so a crash loses at most the items in flight. Rows carry ``id``, ``content``, ``usage``, ``latency_s``
  and ``error`` (and ``scores``, when a ``score`` callable is given: the task's scorers; the code
  scorer's rows are scored by two threads while the next rows come, written in order); secrets the
  model knows (and secret-looking environment variables) are masked.
- **Resume**: running again on the same file skips every id whose latest row has no error. Rows that
  recorded an error are run again by default (``retry_errors=True``: errors are mostly transient: rate
  limits, timeouts, a server restart); the newest row of an id wins.
- **One failing item** records an error row; the run goes on.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, cast

from ..errors import ConfigError, Problem
from ..generation import validate_generation
from ..pricing import Budget, Price, price_for
from . import strategies
from .budget import admitted, job_budget, row_cost
from .items import Item, as_item
from .record import ResultsWriter, percentile, read_results, redact_row, repair_tail
from .spec import RunnerSpec

__all__ = ["RunStats", "run_items"]

log = logging.getLogger("modelfactory.runner")


@dataclass
class RunStats:
    """What one :func:`run_items` call did (items skipped as already done are not counted in ok/failed)."""

    total: int = 0  # items given
    skipped: int = 0  # already done in the results file (resume)
    earlier_failed: int = 0  # of the skipped: their newest row is an error (kept with retry_errors=False)
    earlier_cost_usd: float | None = None  # what the skipped items' newest rows cost (None: unpriced)
    ok: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    elapsed_s: float = 0.0
    mode: str = "threads"  # threads | async | batches | sequential | provider_batch
    concurrency: int = 1
    cost_usd: float | None = None  # of this run's rows; None: the model has no price (unknown, not 0)
    batches_pending: int = 0  # provider_batch: batches left running (submit phase, max_wait)
    budget: Budget | None = field(default=None, repr=False)  # runner.max_cost_usd, when set
    latencies: list[float] = field(default_factory=list, repr=False)  # of successful items
    # the newest row of every item (the skipped ones' first): without a results file, or with keep_rows
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def done(self) -> int:
        return self.ok + self.failed

    @property
    def job_failed(self) -> int:
        """The items whose newest row is an error: this run's and the earlier ones kept."""
        return self.failed + self.earlier_failed

    @property
    def job_cost_usd(self) -> float | None:
        """What every item's newest row cost, earlier runs' included (None: no row was priced)."""
        if self.cost_usd is None and self.earlier_cost_usd is None:
            return None
        return round((self.cost_usd or 0.0) + (self.earlier_cost_usd or 0.0), 6)

    @classmethod
    def resumed(
        cls, total: int, earlier: list[dict[str, Any]], mode: str, concurrency: int, keep_rows: bool
    ) -> RunStats:
        """A run's stats before it starts: ``earlier``, the newest rows of the items skipped as done
        before, counted (their errors and cost) and, with ``keep_rows``, kept."""
        stats = cls(total=total, skipped=len(earlier), mode=mode, concurrency=concurrency)
        for row in earlier:
            stats.earlier_failed += 1 if row.get("error") else 0
            if isinstance(row.get("cost_usd"), (int, float)):
                stats.earlier_cost_usd = (stats.earlier_cost_usd or 0.0) + row["cost_usd"]
        stats.rows.extend(earlier if keep_rows else [])
        return stats

    @property
    def mean_latency_s(self) -> float | None:
        return sum(self.latencies) / len(self.latencies) if self.latencies else None

    @property
    def p95_latency_s(self) -> float | None:
        return percentile(self.latencies, 95)

    @property
    def items_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def count(self, row: Mapping[str, Any]) -> None:
        """One recorded row: its outcome, tokens, latency and cost."""
        if row.get("cost_usd") is not None:
            self.cost_usd = (self.cost_usd or 0.0) + row["cost_usd"]
        if row["error"]:
            self.failed += 1
            return
        self.ok += 1
        self.latencies.append(row["latency_s"])
        usage = row["usage"] or {}
        self.input_tokens += int(usage.get("input_tokens") or 0)
        self.output_tokens += int(usage.get("output_tokens") or 0)

    def to_dict(self) -> dict[str, Any]:
        skip = ("latencies", "rows", "budget")
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        data["budget"] = None if self.budget is None else self.budget.to_dict()
        data["cost_usd"] = None if self.cost_usd is None else round(self.cost_usd, 6)
        if self.earlier_cost_usd is not None:
            data["earlier_cost_usd"] = round(self.earlier_cost_usd, 6)
        data.update(
            mean_latency_s=None if self.mean_latency_s is None else round(self.mean_latency_s, 4),
            p95_latency_s=self.p95_latency_s,
            items_per_s=round(self.items_per_s, 3),
            output_tokens_per_s=round(self.output_tokens_per_s, 3),
            elapsed_s=round(self.elapsed_s, 4),
        )
        return data


# ---------------------------------------------------------------------------------------------- running


def _redactor(model: Any, generation: dict[str, Any]) -> Callable[[str], str]:
    """What scrubs a row's text: the model's credentials (its spec's keys, headers, URL userinfo), the
    credentials among the per-call ``generation`` kwargs (``extra_headers``, an ``api_key``), and
    secret-named environment values, whatever variable each credential came from."""
    from ..secrets import redactor

    return redactor(getattr(model, "redact", None), generation)


_Run = TypeVar("_Run", bound=Callable[..., "RunStats"])


def _one_run_per_dir(run: _Run) -> _Run:
    """``run_items`` holding its results dir's run lock (:mod:`modelfactory._runlock`) while it runs: a
    second run into the same dir (its rows, its ``batches.json``) fails at once instead of paying again."""

    @functools.wraps(run)
    def locked(model: Any, items: Any, **kwargs: Any) -> RunStats:
        path = kwargs.get("results_path")
        if path is None:
            return run(model, items, **kwargs)
        from .._runlock import dir_lock

        with dir_lock(Path(path).parent, key="results_path"):
            return run(model, items, **kwargs)

    return cast(_Run, locked)


@_one_run_per_dir
def run_items(
    model: Any,
    items: Iterable[Item | Mapping[str, Any]],
    *,
    concurrency: int = RunnerSpec.model_fields["concurrency"].default,
    local_batch_size: int = RunnerSpec.model_fields["local_batch_size"].default,
    results_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    retry_errors: bool = True,
    fsync: bool = True,
    desc: str | None = None,
    max_cost_usd: float | None = None,
    provider_batch: Any = None,
    keep_rows: bool | None = None,
    score: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    score_workers: int = 1,
    **generation: Any,
) -> RunStats:
    """Run every item through ``model`` and append one row per item to ``results_path`` (if given).

    ``generation``: per-call keyword arguments (``stop_sequences``, ``temperature``, ``max_tokens``, ...).
    Items already done in ``results_path`` are skipped (errored ones too, when ``retry_errors=False``);
    the stats count their errors and cost too (``job_failed``, ``job_cost_usd``: nobody re-reads the
    file). Without ``results_path`` (or with ``keep_rows``) :attr:`RunStats.rows` holds every item's
    newest row. Never raises for a failing item. Every row gets ``cost_usd`` (None: the model has no price).
    ``max_cost_usd``: stop submitting once spent + in-flight estimates would pass it
    (:attr:`RunStats.budget` says why); the items not submitted have no row, so a resume runs them.
    ``score``: called on each row (priced, redacted) before it is written, returns it with its
    ``scores`` (:class:`~modelfactory.job.scores.JobScores`); None: rows are not scored.
    ``score_workers`` > 1: rows are scored in a pool of that many threads while the next ones arrive
    (the code scorer's sandboxed subprocesses), written in the order they came; on Ctrl-C a row whose
    score is not done is written unscored (a resumed run scores it at its end), none is lost.

    ``provider_batch`` (a :class:`~modelfactory.batch.BatchOptions`; None: online calls): the pending
    items go through the provider's batch endpoint (:mod:`modelfactory.batch`), their ids kept in
    ``batches.json`` next to ``results_path`` so a re-run collects them instead of submitting again.
    """
    _refuse_renamed(generation)
    _check_sizes(concurrency, local_batch_size)
    all_items = _unique(items)
    path = Path(results_path) if results_path is not None else None
    todo, earlier = _pending(all_items, path, retry_errors)
    generation = validate_generation(generation, prefix="")  # every bad parameter at once, before a call
    mode, workers = strategies.choose(model, provider_batch, concurrency, len(todo))
    keep = path is None if keep_rows is None else keep_rows
    stats = RunStats.resumed(len(all_items), earlier, mode, workers, keep)
    price = price_for(model)
    stats.budget = budget = job_budget(model, price, max_cost_usd, generation, batch=mode == "provider_batch")
    stats.cost_usd = None if price is None else 0.0
    if not todo:
        return stats
    submitted: Iterable[Item] = todo if budget is None else admitted(budget, model, todo, generation)
    rows = strategies.rows(
        mode, model, submitted, generation, workers=workers, local_batch_size=local_batch_size,
        provider_batch=provider_batch, path=path, progress=progress, desc=desc or "items",
    )  # fmt: skip
    bar = _progress_bar(len(todo), progress and mode != "provider_batch", desc or "items", stats.skipped)
    writer = ResultsWriter(path, fsync)
    _record(rows, stats, _redactor(model, generation), price, writer, bar, keep, path, score, score_workers)
    if mode == "provider_batch" and path is not None:
        from ..batch import BATCHES_FILE, BatchState

        stats.batches_pending = len(BatchState.load(path.parent / BATCHES_FILE).running())
    return stats


def _check_sizes(concurrency: int, local_batch_size: int) -> None:
    if concurrency < 1:
        raise ConfigError([Problem("runner.concurrency", f"must be >= 1, got {concurrency}")])
    if local_batch_size < 1:
        raise ConfigError([Problem("runner.local_batch_size", f"must be >= 1, got {local_batch_size}")])


def _unique(items: Iterable[Item | Mapping[str, Any]]) -> list[Item]:
    """The items, or a :class:`ConfigError` when two share an id (rows are keyed by it)."""
    all_items = [as_item(obj) for obj in items]
    ids = [it.id for it in all_items]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ConfigError([Problem("items", f"duplicate ids {dupes}", "give every item a unique id")])
    return all_items


def _pending(
    items: list[Item], path: Path | None, retry_errors: bool
) -> tuple[list[Item], list[dict[str, Any]]]:
    """The items a resume still has to run (not done in ``path``; an error row counts as not done with
    ``retry_errors``), and the newest rows of the others, in the items' order."""
    if path is None:
        return items, []
    repair_tail(path)
    rows = read_results(path)
    done = {i: row for i, row in rows.items() if not (retry_errors and row.get("error"))}
    return [it for it in items if it.id not in done], [done[it.id] for it in items if it.id in done]


def _record(
    rows: Iterator[dict[str, Any]],
    stats: RunStats,
    redact: Callable[[str], str],
    price: Price | None,
    writer: ResultsWriter,
    bar: Any,
    keep: bool,
    path: Path | None,
    score: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    score_workers: int = 1,
) -> None:
    """Each row redacted, priced, settled with the budget, scored, written, and counted in ``stats``;
    with ``score_workers`` > 1, scored in a pool while the next rows come (:func:`_scored_in_pool`)."""
    start = time.perf_counter()

    def prepared() -> Iterator[dict[str, Any]]:
        for row in rows:
            row = redact_row(row, redact)
            row["cost_usd"] = row_cost(row, price)
            if stats.budget is not None:
                stats.budget.settle(row["id"], 0.0 if row["error"] else row["cost_usd"])
            yield row

    def emit(row: dict[str, Any]) -> None:
        writer.write(row)
        if keep:
            stats.rows.append(row)
        stats.count(row)
        stats.elapsed_s = time.perf_counter() - start
        if bar is not None:
            bar.set_postfix(errors=stats.failed, tok_s=f"{stats.output_tokens_per_s:.1f}", refresh=False)
            bar.update(1)

    if score is None:
        done: Iterator[dict[str, Any]] = prepared()
    elif score_workers > 1:
        done = _scored_in_pool(prepared(), score, score_workers, emit)
    else:
        done = (score(row) for row in prepared())
    try:
        for row in done:
            emit(row)
    except KeyboardInterrupt:
        if stats.mode == "provider_batch":  # wherever Ctrl-C lands: the batches left running, how to go on
            from ..batch import interrupted_note

            note = interrupted_note(path)
            if note is not None:
                print(note, file=sys.stderr)
        raise
    finally:
        close = getattr(done, "close", None)
        if close is not None:
            close()  # a pool's rows not yet written: written now, scored or not
        close = getattr(rows, "close", None)
        if close is not None:
            close()
        stats.elapsed_s = time.perf_counter() - start
        writer.close()
        if bar is not None:
            bar.close()


def _scored_in_pool(
    rows: Iterator[dict[str, Any]],
    score: Callable[[dict[str, Any]], dict[str, Any]],
    workers: int,
    abandon: Callable[[dict[str, Any]], None],
) -> Iterator[dict[str, Any]]:
    """``rows`` scored by ``workers`` threads (each a copy: the row itself stays unscored) while the next
    rows come, yielded in the order they came, at most ``2 * workers`` waiting. Stopped early (Ctrl-C, an
    error, the consumer closing it): each waiting row goes to ``abandon`` in order, scored when its score
    is done, else as it came (no ``scores``: a resumed run's :meth:`JobScores.finish` scores it)."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelfactory-score")
    waiting: deque[tuple[dict[str, Any], Future[dict[str, Any]]]] = deque()
    try:
        for row in rows:
            waiting.append((row, pool.submit(score, dict(row))))
            while waiting and (waiting[0][1].done() or len(waiting) > 2 * workers):
                scored = waiting[0][1].result()
                waiting.popleft()
                yield scored
        while waiting:
            scored = waiting[0][1].result()
            waiting.popleft()
            yield scored
    finally:
        left = list(waiting)
        waiting.clear()
        for _, fut in left:
            fut.cancel()
        pool.shutdown(wait=False, cancel_futures=True)  # a running score ends by itself (its time limit)
        for row, fut in left:
            ok = fut.done() and not fut.cancelled() and fut.exception() is None
            abandon(fut.result() if ok else row)


# run_items' keywords before issue 24's renames, each with its new name.
_RENAMED_KWARGS = {
    "batch_size": "local_batch_size",
    "mode": "provider_batch (a BatchOptions; None: online)",
    "batch": "provider_batch",
}


def _refuse_renamed(generation: Mapping[str, Any]) -> None:
    """An old keyword would otherwise be sent to the model as a per-call parameter."""
    problems = [
        Problem(old, f"was renamed to {new}", f"run_items(..., {new.split(' ')[0]}=...)")
        for old, new in _RENAMED_KWARGS.items()
        if old in generation
    ]
    if problems:
        raise ConfigError(problems, title="renamed run_items keywords")


def _progress_bar(total: int, enabled: bool, desc: str, skipped: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm  # imported here: tqdm costs start-up time the single-prompt app does not need

    if skipped:
        desc = f"{desc} ({skipped} done before)"
    return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True, mininterval=0.2)
