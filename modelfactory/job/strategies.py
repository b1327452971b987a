"""How a job's items are called (issue 24: the runner as parts), chosen from what the model declares.

- ``provider_batch``: the provider's Batch API (:mod:`modelfactory.batch`), when the job asks for it.
- ``batches``: a model with ``generate_batch`` (local models) gets ``local_batch_size`` items per call
  (with a response cache on, only if it declares ``batch_uses_cache``: otherwise the cache is bypassed).
- ``sequential``: another model that runs in this process (never called from several threads), or
  ``concurrency=1``.
- ``async``: a model with its own async client, ``concurrency`` tasks on one event loop.
- ``threads``: any other model, from a thread pool of ``concurrency``.

Each strategy yields one row per item (:mod:`modelfactory.job.record`' ``ok_row``/``error_row``) as the items
finish; a failing item is an error row, never an exception.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from .items import Item
from .record import error_row, ok_row

__all__ = ["MODES", "choose", "rows"]

log = logging.getLogger("modelfactory.runner")

MODES = ("provider_batch", "batches", "sequential", "async", "threads")


def choose(model: Any, provider_batch: Any, concurrency: int, pending: int) -> tuple[str, int]:
    """The strategy for ``model`` and how many calls it runs at once (never more than the items)."""
    from ..model import runs_locally  # here: nothing imports the model layer until a run needs it

    wide = min(concurrency, max(1, pending))
    cache = getattr(getattr(model, "spec", None), "cache", None)
    # A generate_batch that does not look each row up in the response cache would bypass it.
    batch_ok = not getattr(cache, "enabled", False) or getattr(model, "batch_uses_cache", False)
    if provider_batch is not None:
        return "provider_batch", wide
    if callable(getattr(model, "generate_batch", None)) and batch_ok:
        return "batches", 1
    if runs_locally(model) or concurrency == 1:  # in this process: never from several threads
        return "sequential", 1
    if _native_async(model):
        return "async", wide
    return "threads", wide


def rows(
    mode: str,
    model: Any,
    items: Iterable[Item],
    generation: dict[str, Any],
    *,
    workers: int,
    local_batch_size: int,
    provider_batch: Any = None,
    path: Path | None = None,
    progress: bool = False,
    desc: str = "items",
) -> Iterator[dict[str, Any]]:
    """The rows of ``items`` run by strategy ``mode`` (from :func:`choose`), in the order they finish."""
    if mode == "provider_batch":
        from ..batch import run_batches

        def online(left: Sequence[Item]) -> Iterator[dict[str, Any]]:  # items a batch did not answer
            if _native_async(model):
                return _run_async(model, left, workers, generation)
            return _run_threads(model, left, workers, generation)

        # a batch submits every admitted item at once
        return run_batches(
            model, list(items), generation, provider_batch, path, online, progress=progress, desc=desc
        )
    if mode == "threads":
        return _run_threads(model, items, workers, generation)
    if mode == "async":
        return _run_async(model, items, workers, generation)
    if mode == "batches":
        return _run_batches(model, items, local_batch_size, generation)
    return (_call_one(model, it, generation) for it in items)


def _call_one(model: Any, item: Item, generation: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        reply = model(item.messages, **{**generation, **item.generation})
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
    from ..model import Model

    return isinstance(model, Model) and type(model)._agenerate is not Model._agenerate


async def _acall_one(model: Any, item: Item, generation: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        reply = await model.agenerate(item.messages, **{**generation, **item.generation})
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
    per_row_seeds = "seeds" in accepts and getattr(model, "batch_seeds_per_row", False) is True
    items = iter(todo)
    while chunk := list(itertools.islice(items, local_batch_size)):
        for batch, gen in _same_call_kwargs(chunk, generation, per_row_seeds):
            yield from _one_batch(model, generate_batch, accepts, batch, gen, generation)


def _same_call_kwargs(
    chunk: list[Item], generation: dict[str, Any], per_row_seeds: bool
) -> Iterator[tuple[list[Item], dict[str, Any]]]:
    """The chunk as ``generate_batch`` calls: one when no item has call kwargs of its own (or only a
    ``seed``, to a model that seeds each row: ``seeds``), else one per distinct set of item kwargs (an
    epoch's seed: the items of one epoch together), in the chunk's order of first appearance."""
    if not any(it.generation for it in chunk):
        yield chunk, generation
        return
    if per_row_seeds and all(set(it.generation) <= {"seed"} for it in chunk):
        seeds = [it.generation.get("seed", generation.get("seed")) for it in chunk]
        yield chunk, {**{k: v for k, v in generation.items() if k != "seed"}, "seeds": seeds}
        return
    groups: dict[str, list[Item]] = {}
    for it in chunk:
        groups.setdefault(repr(sorted(it.generation.items())), []).append(it)
    for group in groups.values():
        yield group, {**generation, **group[0].generation}


def _one_batch(
    model: Any,
    generate_batch: Any,
    accepts: set[str],
    batch: list[Item],
    kwargs: dict[str, Any],
    generation: dict[str, Any],
) -> Iterator[dict[str, Any]]:
    """The rows of one ``generate_batch(batch, **kwargs)`` call; when the call fails, its items one by
    one (each with the job's ``generation`` and its own kwargs), so only a bad item records an error."""
    extra: dict[str, Any] = {}
    if "batch_size" in accepts:
        extra["batch_size"] = len(batch)  # the chunk is the batch
    if "return_exceptions" in accepts:
        extra["return_exceptions"] = True  # a bad row gets its exception, the others their replies
    t0 = time.perf_counter()
    try:
        replies = list(generate_batch([it.messages for it in batch], **kwargs, **extra))
        if len(replies) != len(batch):
            raise RuntimeError(f"generate_batch returned {len(replies)} replies for {len(batch)} items")
    except Exception as exc:
        log.warning("batch of %d failed (%s); running its items one by one", len(batch), exc)
        for item in batch:
            yield _call_one(model, item, generation)
        return
    latency = time.perf_counter() - t0
    for item, reply in zip(batch, replies, strict=True):
        if isinstance(reply, BaseException):
            yield error_row(item.id, reply, latency)
        else:
            yield ok_row(item.id, reply, latency)
