"""Runs the served model off the event loop.

Requests for a model with ``generate_batch`` (local models) that arrive within ``batch_window_ms`` of
each other, or while the model is busy, and share their generation parameters, go through one
``generate_batch`` call (up to ``max_batch_size`` rows; each row keeps its own stops, and its own seed
where the model samples each row from its own generator: ``batch_seeds_per_row``). Other models get
one call per request from a pool of ``max_concurrency`` threads; streams too, and are never batched.
So does a model with ``continuous_batching = True``, which decodes concurrent calls together itself.
"""

import asyncio
import contextlib
import inspect
import json
import threading
import uuid
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..messages import ChatMessageStreamDelta
from .settings import ServerSettings

__all__ = ["Dispatcher", "Job", "batch_group"]


@dataclass
class Job:
    messages: list[dict[str, Any]]
    stop: list[str]
    params: dict[str, Any]
    future: asyncio.Future[Any]
    group: str = ""


def batch_group(params: dict[str, Any], seeds_per_row: bool = False) -> str:
    """The key of the requests that may share a ``generate_batch`` call: the same parameters but the
    seed. A seed decides nothing in greedy decoding (``temperature`` 0, what lm-eval sends with its fixed
    seed), and a model that samples each row from its own generator (``batch_seeds_per_row``) gets each
    row's seed: either way a reply depends on its seed only, never on which other requests happened to
    arrive with it. A sampled seeded request to any other model runs alone."""
    if "seed" in params:
        if params.get("temperature") != 0 and not seeds_per_row:
            return uuid.uuid4().hex
        params = {k: v for k, v in params.items() if k != "seed"}
    return json.dumps(params, sort_keys=True)


@dataclass
class Dispatcher:
    """Runs the model off the event loop: batched for ``generate_batch`` models, a thread pool otherwise."""

    model: Any
    settings: ServerSettings
    queue: asyncio.Queue[Job] | None = None
    worker: asyncio.Task[None] | None = None
    pool: ThreadPoolExecutor = field(init=False)
    batch_pool: ThreadPoolExecutor = field(init=False)
    batches: list[int] = field(default_factory=list)  # sizes of the generate_batch calls (for tests, stats)

    def __post_init__(self) -> None:
        self.pool = ThreadPoolExecutor(self.settings.max_concurrency, thread_name_prefix="modelfactory-serve")
        self.batch_pool = ThreadPoolExecutor(1, thread_name_prefix="modelfactory-batch")
        batch = getattr(self.model, "generate_batch", None)
        # A model that batches concurrent calls itself (OpenVINOModel's continuous batching) gets each
        # request as it comes, from the pool: holding requests for a window would only delay them.
        self.batching = callable(batch) and getattr(self.model, "continuous_batching", False) is not True
        params: Any = {}
        if callable(batch):
            with contextlib.suppress(TypeError, ValueError):
                params = inspect.signature(batch).parameters
        self.row_errors = "return_exceptions" in params
        self.seeds_per_row = getattr(self.model, "batch_seeds_per_row", False) is True

    async def start(self) -> None:
        if self.batching:
            self.queue = asyncio.Queue()
            self.worker = asyncio.create_task(self._batch_loop())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.batch_pool.shutdown(wait=False, cancel_futures=True)

    async def complete(
        self, messages: list[dict[str, Any]], stop: list[str], params: dict[str, Any], **extra: Any
    ) -> Any:
        loop = asyncio.get_running_loop()
        if self.batching and self.queue is not None and not any(v is not None for v in extra.values()):
            group = batch_group(params, self.seeds_per_row)
            job = Job(messages, stop, params, loop.create_future(), group)
            await self.queue.put(job)
            return await job.future

        def call() -> Any:
            return self.model.generate(messages, stop_sequences=stop or None, **extra, **params)

        return await loop.run_in_executor(self.pool, call)

    async def _batch_loop(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        window = self.settings.batch_window_ms / 1000
        limit = self.settings.max_batch_size
        pending: list[Job] = []
        while True:
            if not pending:
                pending.append(await self.queue.get())
                deadline = loop.time() + window
                while len(pending) < limit and (timeout := deadline - loop.time()) > 0:
                    try:
                        pending.append(await asyncio.wait_for(self.queue.get(), timeout))
                    except TimeoutError:
                        break
            while not self.queue.empty():  # everything that arrived while the last batch ran
                pending.append(self.queue.get_nowait())
            pending = [j for j in pending if not j.future.done()]  # callers that went away
            if not pending:
                continue
            group = pending[0].group
            batch = [j for j in pending if j.group == group][:limit]
            pending = [j for j in pending if j not in batch]
            self.batches.append(len(batch))
            try:
                replies = await loop.run_in_executor(self.batch_pool, self._run_batch, batch)
            except BaseException as exc:  # handed to every caller of the batch
                if isinstance(exc, asyncio.CancelledError):
                    raise
                replies = [exc] * len(batch)
            for job, reply in zip(batch, replies, strict=True):
                if job.future.done():
                    continue
                if isinstance(reply, BaseException):
                    job.future.set_exception(reply)
                else:
                    job.future.set_result(reply)

    def _run_batch(self, batch: list[Job]) -> list[Any]:
        kwargs = {k: v for k, v in batch[0].params.items() if k != "seed"}
        seeds = [j.params.get("seed") for j in batch]
        if self.seeds_per_row and any(seed is not None for seed in seeds):
            kwargs["seeds"] = seeds  # one per row: each row samples from its own generator
        elif any(seed is not None for seed in seeds):  # greedy rows: any seed (it decides nothing)
            kwargs["seed"] = next(s for s in seeds if s is not None)
        if self.row_errors:
            kwargs["return_exceptions"] = True
        replies = self.model.generate_batch(
            [j.messages for j in batch], stop_sequences=[j.stop or None for j in batch], **kwargs
        )
        return list(replies)

    def stream(
        self, messages: list[dict[str, Any]], stop: list[str], params: dict[str, Any], **extra: Any
    ) -> AsyncGenerator[ChatMessageStreamDelta, None]:
        """The model's stream, produced in a pool thread; closing the iterator stops the generation."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        done = object()

        def produce() -> None:
            gen: Iterator[ChatMessageStreamDelta] | None = None
            try:
                gen = self.model.generate_stream(messages, stop_sequences=stop or None, **extra, **params)
                for delta in gen:
                    if cancel.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, delta)
                loop.call_soon_threadsafe(queue.put_nowait, done)
            except BaseException as exc:  # handed to the consumer
                with contextlib.suppress(RuntimeError):  # the loop may be closed at shutdown
                    loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                close = getattr(gen, "close", None)
                if close is not None:
                    close()  # a stopped stream stops its generation

        future = loop.run_in_executor(self.pool, produce)

        async def consume() -> AsyncGenerator[ChatMessageStreamDelta, None]:
            try:
                while True:
                    item = await queue.get()
                    if item is done:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                cancel.set()
                future.cancel()

        return consume()
