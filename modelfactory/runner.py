"""Items in, replies out: a dataset (or one prompt) run through a model, recorded row by row.

Items come from :mod:`modelfactory.datasets` (their names are re-exported here, where they used to live).

- **Concurrency**: API models with a native async client (OpenAI, Azure, LiteLLM, HfApiModel) are
  called with ``agenerate`` from ``concurrency`` tasks on one event loop (mode ``async``); other models
  from a thread pool (mode ``threads``). Either way ``concurrency`` requests are in flight and a model's
  own ``requests_per_minute`` limiter is shared by all of them. A model with
  ``generate_batch(conversations, ...)`` (local models) gets ``local_batch_size`` items per call (with a
  response cache on, only if it declares ``batch_uses_cache``: otherwise the cache would be bypassed); a
  local model without it is called sequentially.
- **Results**: one JSON row per item appended to ``results.jsonl`` as it finishes, flushed and fsynced,
  so a crash loses at most the items in flight. Rows carry ``id``, ``content``, ``usage``, ``latency_s``
  and ``error``; secrets the model knows (and secret-looking environment variables) are masked.
- **Resume**: running again on the same file skips every id whose latest row has no error. Rows that
  recorded an error are run again by default (``retry_errors=True``: errors are mostly transient: rate
  limits, timeouts, a server restart); the newest row of an id wins.
- **One failing item** records an error row; the run goes on.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, cast

# load_dataset, load_dotenv, prompt_item: re-exported (this module was their home before datasets.py).
from .datasets import Item, as_item, load_dataset, load_dotenv, prompt_item
from .errors import ConfigError, Problem
from .generation import validate_generation
from .job.spec import RunnerSpec
from .pricing import Budget, Price, cost_usd, price_for, token_counter

# aggregate_rows, read_results: re-exported (this module was their home before results.py).
from .results import (
    ResultsWriter,
    aggregate_rows,
    error_row,
    ok_row,
    percentile,
    read_results,
    redact_row,
    repair_tail,
)

__all__ = [
    "Item",
    "RunStats",
    "aggregate_rows",
    "load_dataset",
    "load_dotenv",
    "prompt_item",
    "read_results",
    "run_items",
]

log = logging.getLogger("modelfactory.runner")


@dataclass
class RunStats:
    """What one :func:`run_items` call did (items skipped as already done are not counted in ok/failed)."""

    total: int = 0  # items given
    skipped: int = 0  # already done in the results file (resume)
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
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)  # only without a results file

    @property
    def done(self) -> int:
        return self.ok + self.failed

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

    def to_dict(self) -> dict[str, Any]:
        skip = ("latencies", "rows", "budget")
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        data["budget"] = None if self.budget is None else self.budget.to_dict()
        data["cost_usd"] = None if self.cost_usd is None else round(self.cost_usd, 6)
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
    from .secrets import redactor

    return redactor(getattr(model, "redact", None), generation)


def _call_one(model: Any, item: Item, generation: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        reply = model(item.messages, **generation)
    except Exception as exc:  # one failing item is recorded; the run goes on
        return error_row(item.id, exc, time.perf_counter() - start)
    return ok_row(item.id, reply, time.perf_counter() - start)


def _run_threads(
    model: Any, todo: Iterable[Item], concurrency: int, generation: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Rows as they finish; at most ``concurrency`` calls in flight, a few more items queued."""
    pending: set[Future[dict[str, Any]]] = set()
    items = iter(todo)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="modelfactory-runner")
    try:

        def fill() -> None:
            while len(pending) < 2 * concurrency:
                item = next(items, None)
                if item is None:
                    return
                pending.add(pool.submit(_call_one, model, item, generation))

        fill()
        while pending:
            done, still = wait(pending, return_when=FIRST_COMPLETED)
            pending.clear()
            pending.update(still)
            for fut in done:
                yield fut.result()
            fill()
    finally:  # also on Ctrl-C or a closed generator: drop what has not started, wait for the rest
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _native_async(model: Any) -> bool:
    """A :class:`Model` whose backend has its own async client (its ``_agenerate`` is not the default
    worker-thread one): the runner drives it from one event loop instead of a thread pool."""
    from .model import Model

    return isinstance(model, Model) and type(model)._agenerate is not Model._agenerate


async def _acall_one(model: Any, item: Item, generation: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        reply = await model.agenerate(item.messages, **generation)
    except Exception as exc:  # one failing item is recorded; the run goes on
        return error_row(item.id, exc, time.perf_counter() - start)
    return ok_row(item.id, reply, time.perf_counter() - start)


def _run_async(
    model: Any, todo: Iterable[Item], concurrency: int, generation: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Rows as they finish, from ``concurrency`` tasks on one event loop in a helper thread (the same
    rows as :func:`_run_threads`, from ``agenerate`` instead of ``generate``)."""
    rows: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()
    done = object()
    items = iter(todo)

    async def worker() -> None:
        for item in items:  # one shared iterator: each item goes to exactly one task
            if stop.is_set():
                return
            rows.put(await _acall_one(model, item, generation))

    async def main() -> None:
        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        except BaseException as exc:  # not expected (_acall_one records errors): hand it to the caller
            rows.put(exc)
        finally:
            rows.put(done)

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="modelfactory-runner-async")
    thread.start()
    try:
        while True:
            row = rows.get()
            if row is done:
                break
            if isinstance(row, BaseException):
                raise row
            yield row
    finally:  # also on Ctrl-C or a closed generator: start nothing new, wait for the calls in flight
        stop.set()
        thread.join()


def _run_batches(
    model: Any, todo: Iterable[Item], local_batch_size: int, generation: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    generate_batch = model.generate_batch
    try:
        accepts = set(inspect.signature(generate_batch).parameters)
    except (TypeError, ValueError):
        accepts = set()
    items = iter(todo)
    while batch := list(itertools.islice(items, local_batch_size)):
        extra: dict[str, Any] = {}
        if "batch_size" in accepts:
            extra["batch_size"] = len(batch)  # the chunk is the batch
        if "return_exceptions" in accepts:
            extra["return_exceptions"] = True  # a bad row gets its exception, the others their replies
        t0 = time.perf_counter()
        try:
            replies = list(generate_batch([it.messages for it in batch], **generation, **extra))
            if len(replies) != len(batch):
                raise RuntimeError(f"generate_batch returned {len(replies)} replies for {len(batch)} items")
        except Exception as exc:
            # Find the culprit: run this batch's items one by one, so only a bad item records an error.
            log.warning("batch of %d failed (%s); running its items one by one", len(batch), exc)
            for item in batch:
                yield _call_one(model, item, generation)
            continue
        latency = time.perf_counter() - t0
        for item, reply in zip(batch, replies, strict=True):
            if isinstance(reply, BaseException):
                yield error_row(item.id, reply, latency)
            else:
                yield ok_row(item.id, reply, latency)


_Run = TypeVar("_Run", bound=Callable[..., "RunStats"])


def _one_run_per_dir(run: _Run) -> _Run:
    """``run_items`` holding its results dir's run lock (:mod:`modelfactory.runlock`) while it runs: a
    second run into the same dir (its rows, its ``batches.json``) fails at once instead of paying again."""

    @functools.wraps(run)
    def locked(model: Any, items: Any, **kwargs: Any) -> RunStats:
        path = kwargs.get("results_path")
        if path is None:
            return run(model, items, **kwargs)
        from .runlock import dir_lock

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
    **generation: Any,
) -> RunStats:
    """Run every item through ``model`` and append one row per item to ``results_path`` (if given).

    ``generation``: per-call keyword arguments (``stop_sequences``, ``temperature``, ``max_tokens``, ...).
    Items already done in ``results_path`` are skipped (errored ones too, when ``retry_errors=False``).
    Without ``results_path`` the rows are kept in :attr:`RunStats.rows`. Never raises for a failing item.
    Every row gets ``cost_usd`` (None when the model has no price, see :mod:`modelfactory.pricing`).
    ``max_cost_usd``: stop submitting once spent + in-flight estimates would pass it
    (:attr:`RunStats.budget` says why); the items not submitted have no row, so a resume runs them.

    ``provider_batch`` (a :class:`~modelfactory.batch.BatchOptions`; None: online calls): the pending
    items go through the provider's batch endpoint (:mod:`modelfactory.batch`), their ids kept in
    ``batches.json`` next to ``results_path`` so a re-run collects them instead of submitting again.
    """
    _refuse_renamed(generation)
    if concurrency < 1:
        raise ConfigError([Problem("runner.concurrency", f"must be >= 1, got {concurrency}")])
    if local_batch_size < 1:
        raise ConfigError([Problem("runner.local_batch_size", f"must be >= 1, got {local_batch_size}")])
    all_items = [as_item(obj) for obj in items]
    ids = [it.id for it in all_items]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ConfigError([Problem("items", f"duplicate ids {dupes}", "give every item a unique id")])

    path = Path(results_path) if results_path is not None else None
    done_ids: set[str] = set()
    if path is not None:
        repair_tail(path)
        previous = read_results(path)
        done_ids = {i for i, row in previous.items() if not (retry_errors and row.get("error"))}
    todo = [it for it in all_items if it.id not in done_ids]

    from .model import runs_locally  # here: the runner imports no model layer until it runs one

    generation = validate_generation(generation, prefix="")  # every bad parameter at once, before a call
    cache = getattr(getattr(model, "spec", None), "cache", None)
    # A generate_batch that does not look each row up in the response cache would bypass it.
    batch_ok = not getattr(cache, "enabled", False) or getattr(model, "batch_uses_cache", False)
    if provider_batch is not None:
        mode, workers = "provider_batch", min(concurrency, max(1, len(todo)))
    elif callable(getattr(model, "generate_batch", None)) and batch_ok:
        mode, workers = "batches", 1
    elif runs_locally(model) or concurrency == 1:  # in this process: never from several threads
        mode, workers = "sequential", 1
    elif _native_async(model):
        mode, workers = "async", min(concurrency, max(1, len(todo)))
    else:
        mode, workers = "threads", min(concurrency, max(1, len(todo)))
    stats = RunStats(total=len(all_items), skipped=len(all_items) - len(todo), mode=mode, concurrency=workers)
    price = price_for(model)
    budget = _budget(model, price, max_cost_usd, generation, batch=mode == "provider_batch")
    stats.budget = budget
    stats.cost_usd = None if price is None else 0.0
    if not todo:
        return stats
    submitted: Iterable[Item] = todo if budget is None else _within(budget, model, todo, generation)

    redact = _redactor(model, generation)
    writer = ResultsWriter(path, fsync)
    bar = (
        None
        if mode == "provider_batch"
        else _progress_bar(len(todo), progress, desc or "items", stats.skipped)
    )
    start = time.perf_counter()
    if mode == "provider_batch":
        from .batch import run_batches

        def online(items: Sequence[Item]) -> Iterator[dict[str, Any]]:
            if _native_async(model):
                return _run_async(model, items, workers, generation)
            return _run_threads(model, items, workers, generation)

        rows = run_batches(
            model,
            list(submitted),  # a batch submits every admitted item at once
            generation,
            provider_batch,
            path,
            online,
            progress=progress,
            desc=desc or "items",
        )
    elif mode == "threads":
        rows = _run_threads(model, submitted, workers, generation)
    elif mode == "async":
        rows = _run_async(model, submitted, workers, generation)
    elif mode == "batches":
        rows = _run_batches(model, submitted, local_batch_size, generation)
    else:
        rows = (_call_one(model, it, generation) for it in submitted)
    try:
        for row in rows:
            row = redact_row(row, redact)
            row["cost_usd"] = _row_cost(row, price)
            if budget is not None:
                budget.settle(row["id"], 0.0 if row["error"] else row["cost_usd"])
            if row["cost_usd"] is not None:
                stats.cost_usd = (stats.cost_usd or 0.0) + row["cost_usd"]
            writer.write(row)
            if path is None:
                stats.rows.append(row)
            if row["error"]:
                stats.failed += 1
            else:
                stats.ok += 1
                stats.latencies.append(row["latency_s"])
                usage = row["usage"] or {}
                stats.input_tokens += int(usage.get("input_tokens") or 0)
                stats.output_tokens += int(usage.get("output_tokens") or 0)
            stats.elapsed_s = time.perf_counter() - start
            if bar is not None:
                bar.set_postfix(errors=stats.failed, tok_s=f"{stats.output_tokens_per_s:.1f}", refresh=False)
                bar.update(1)
    except KeyboardInterrupt:
        if mode == "provider_batch":  # wherever Ctrl-C lands: the batches it leaves running, and how to go on
            from .batch import interrupted_note

            note = interrupted_note(path)
            if note is not None:
                print(note, file=sys.stderr)
        raise
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
        stats.elapsed_s = time.perf_counter() - start
        writer.close()
        if bar is not None:
            bar.close()
    if mode == "provider_batch" and path is not None:
        from .batch import BATCHES_FILE, BatchState

        stats.batches_pending = len(BatchState.load(path.parent / BATCHES_FILE).running())
    return stats


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


def _row_cost(row: dict[str, Any], price: Price | None) -> float | None:
    """What the row's call cost: None for an error or an unpriced model (unknown, never a made-up 0),
    0 for a reply served from the response cache (nothing was billed), else its usage at the price
    (the batch rate for a batch row)."""
    if row["error"] or price is None:
        return None
    if row.get("cached"):
        return 0.0
    return cost_usd(row["usage"], price, batch=bool(row.get("batch")))


# Output tokens assumed for a call whose max_tokens is not set, when a budget needs an estimate.
DEFAULT_OUTPUT_ESTIMATE = 256


def _budget(
    model: Any, price: Price | None, limit: float | None, generation: dict[str, Any], *, batch: bool = False
) -> Budget | None:
    if limit is None:
        return None
    if limit < 0:
        raise ConfigError([Problem("runner.max_cost_usd", f"must be >= 0, got {limit}")])
    if price is None:
        raise ConfigError(
            [
                Problem(
                    "runner.max_cost_usd",
                    f"a budget needs a price, and {getattr(model, 'model_id', model)!r} has none",
                    "give the model a price (model.price={input: 2.5, output: 10}, USD per million tokens) "
                    "or drop runner.max_cost_usd",
                )
            ]
        )
    return Budget(limit, price, batch=batch)  # batch items are estimated at the batch rate


def _within(budget: Budget, model: Any, todo: Iterable[Item], generation: dict[str, Any]) -> Iterator[Item]:
    """The items the budget admits, in order, estimated as they are taken; stops at the first refusal.
    An item the response cache answers costs nothing: it is let through without an estimate."""
    count, _ = token_counter(model)
    spec = getattr(model, "spec", None)
    out = generation.get("max_tokens") or getattr(spec, "max_tokens", None) or DEFAULT_OUTPUT_ESTIMATE
    cached = _cache_probe(model, generation)
    for item in todo:
        if cached(item):
            yield item
            continue
        if not budget.admit(item.id, count(item.messages), int(out)):
            log.warning("%s", budget.reason)
            return
        yield item


def _cache_probe(model: Any, generation: dict[str, Any]) -> Callable[[Item], bool]:
    """Whether the response cache holds an item's reply (for a budget: a hit is free). Always False for a
    model without a cache on; a lookup that fails counts as a miss (the call itself reports it)."""
    from .model import Model

    cache = getattr(getattr(model, "spec", None), "cache", None)
    if not isinstance(model, Model) or not getattr(cache, "enabled", False):
        return lambda item: False
    from .batch.driver import prepare  # the request an online call of the item sends

    def probe(item: Item) -> bool:
        try:
            return model._cache_lookup(prepare(model, item, generation)) is not None
        except Exception:  # noqa: BLE001 - a replay miss, a bad item: not a hit
            return False

    return probe


def _progress_bar(total: int, enabled: bool, desc: str, skipped: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm  # imported here: tqdm costs start-up time the single-prompt app does not need

    if skipped:
        desc = f"{desc} ({skipped} done before)"
    return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True, mininterval=0.2)
