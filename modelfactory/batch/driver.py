"""``runner.provider_batch.enabled=true``: a job's pending items through a provider's batch endpoint.

Pending items (after resume) that hit the response cache are answered from it; the rest become one or
more provider batches (split at the provider's request and size limits), each request's ``custom_id``
the item id. Ids land in ``batches.json`` in the run dir as soon as they exist, so a re-run into the
same dir polls the batches already submitted instead of paying for them again. Polling backs off from
``poll_s``; when a batch ends its replies are trimmed at the stops, stored in the response cache and
yielded as the same rows online calls give (plus ``"batch": true`` and ``batch_id``, so a price can be
put on them at the batch rate). Items a batch did not answer (expired, cancelled, a retryable error)
go online (``on_missing: online``) or stay error rows (``on_missing: error``).

Phases (``BatchOptions.phase``), so that a multirun submits every job's batches before it waits for any
(:mod:`modelfactory.batch.sweep`): ``all`` (submit, wait, collect: one job on its own), ``submit``
(cache hits and submissions only; the batches are left running, recorded in ``batches.json``) and
``collect`` (no submission: the batches that have ended are collected, the ones still running become
error rows that a re-run collects). :func:`wait_all` polls the batches of many run dirs together.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._batchapi import Mark, crash_point
from ..errors import CacheMissError, ConfigError, ModelFactoryError, Problem
from ..job.items import Item, request_for
from ..job.record import error_row, ok_row
from ..messages import trim_at_stop
from ..model import GenerationRequest
from .base import BATCHES_FILE, BatchAdapter, BatchProgress, BatchRecord, BatchState, custom_id_for

if TYPE_CHECKING:
    from ..job.spec import ProviderBatchSpec

__all__ = [
    "PHASES",
    "BatchGroup",
    "BatchOptions",
    "adapter_for",
    "interrupted_note",
    "run_batches",
    "wait_all",
]

log = logging.getLogger("modelfactory.runner")

Rows = Iterator[dict[str, Any]]

PHASES = ("all", "submit", "collect")
MAX_POLL_FAILURES = 5  # failed polls in a row after which wait_all stops waiting for a batch


@dataclass
class BatchOptions:
    """``runner.provider_batch.*``."""

    poll_s: float = 30.0  # first wait between polls; it grows x1.5 up to 8x this
    max_wait: float | None = None  # seconds; past it the job stops waiting (batches keep running)
    on_missing: str = "online"  # online | error: items a batch did not answer
    max_requests: int | None = None  # per batch, below the provider's own limit
    phase: str = "all"  # all | submit | collect (a multirun's jobs submit; the sweep collects)

    @classmethod
    def from_config(cls, batch: Any, phase: str = "all") -> BatchOptions:
        """From a ``runner.provider_batch`` mapping (a config node or a dict; missing keys take the
        defaults), checked by :class:`~modelfactory.job.spec.ProviderBatchSpec`."""
        from ..job.spec import ProviderBatchSpec, spec_problems

        plain = _plain(batch) if batch is not None else {}
        problems = spec_problems({"model": "-", "runner": {"provider_batch": plain}})
        if problems:
            raise ConfigError(problems, title="invalid runner.provider_batch settings")
        return cls.from_spec(ProviderBatchSpec.model_validate(plain), phase)

    @classmethod
    def from_spec(cls, spec: ProviderBatchSpec, phase: str = "all") -> BatchOptions:
        """From the job spec's ``runner.provider_batch``."""
        return cls(
            poll_s=spec.poll_s,
            max_wait=spec.max_wait,
            on_missing=spec.on_missing,
            max_requests=spec.max_requests,
            phase=phase,
        )

    def __post_init__(self) -> None:
        problems = []
        if self.phase not in PHASES:
            problems.append(Problem("batch phase", f"unknown phase {self.phase!r}", "all, submit or collect"))
        if not (math.isfinite(self.poll_s) and self.poll_s > 0):
            problems.append(
                Problem("runner.provider_batch.poll_s", f"must be > 0, got {self.poll_s}", "e.g. 30")
            )
        if self.max_wait is not None and not (math.isfinite(self.max_wait) and self.max_wait >= 0):
            problems.append(
                Problem("runner.provider_batch.max_wait", f"must be >= 0 or null, got {self.max_wait}", "")
            )
        if self.on_missing not in ("online", "error"):
            problems.append(
                Problem(
                    "runner.provider_batch.on_missing",
                    f"unknown value {self.on_missing!r}",
                    "use online or error",
                )
            )
        if self.max_requests is not None and self.max_requests < 1:
            problems.append(
                Problem("runner.provider_batch.max_requests", f"must be >= 1, got {self.max_requests}", "")
            )
        if problems:
            raise ConfigError(problems, title="invalid runner.provider_batch settings")


def _plain(node: Any) -> Any:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def adapter_for(model: Any) -> BatchAdapter:
    """The batch endpoint ``model``'s backend supplies (``Model.batch_adapter()``), or a
    :class:`ConfigError` saying there is none."""
    own = getattr(model, "batch_adapter", None)
    adapter: BatchAdapter | None = own() if callable(own) else None
    if adapter is not None:
        return adapter
    raise ConfigError(
        [
            Problem(
                "runner.provider_batch.enabled",
                f"{type(model).__name__} ({getattr(model, 'model_id', '?')}) has no batch endpoint "
                "(batch mode covers OpenAI, Azure OpenAI, `modelfactory serve` and litellm anthropic/ models)",
                "runner.provider_batch.enabled=false (online calls) for this model",
            )
        ],
        title="runner.provider_batch",
    )


def state_path(results_path: Path | None) -> Path | None:
    return None if results_path is None else results_path.parent / BATCHES_FILE


def run_batches(
    model: Any,
    todo: Sequence[Item],
    generation: dict[str, Any],
    options: BatchOptions,
    results_path: Path | None,
    online: Callable[[Sequence[Item]], Rows],
    *,
    progress: bool = True,
    desc: str = "batch",
) -> Rows:
    """Rows for ``todo``: cache hits first, then each batch's rows as it ends, then the missing items."""
    adapter = adapter_for(model)
    state = BatchState.load(state_path(results_path))
    by_id = {it.id: it for it in todo}
    reqs: dict[str, GenerationRequest] = {}
    for item in todo:
        try:
            req = request_for(model, item, generation)
            cached = model._cache_lookup(req)
        except (ModelFactoryError, CacheMissError) as exc:
            yield error_row(item.id, exc, 0.0)
            continue
        if cached is not None:
            yield ok_row(item.id, cached, 0.0)
            continue
        reqs[item.id] = req

    unfinished = _find_unrecorded(adapter, state)  # a run killed mid-submission: its batch, if it exists
    in_flight = {i for rec in state.running() for i in rec.items.values()}
    for rec in state.running():  # batches of items done since (or of another dataset): nothing to wait for
        if not any(i in reqs for i in rec.items.values()):
            rec.collected = True
    state.save()
    missing: list[tuple[str, BaseException | None]] = []
    if options.phase != "collect":  # the collecting phase submits nothing: it was the submit phase's job
        for rec in unfinished:  # never created: its uploaded file is used again if it still fits
            ids = list(rec.items.values())
            if rec.input_file_id is not None and all(i in reqs and i not in in_flight for i in ids):
                chunk = [(i, adapter.line(c, reqs[i])) for c, i in rec.items.items()]
                missing += _submit(adapter, model, state, chunk, reqs, rec)
                in_flight.update(ids)
            else:
                state.batches.remove(rec)
        state.save()
        new = [i for i in reqs if i not in in_flight]
        for chunk in _chunks(adapter, options, new, reqs):
            missing += _submit(adapter, model, state, chunk, reqs)
    if in_flight & set(reqs) and options.phase != "collect":
        print(f"{desc}: resuming {len(state.running())} batch(es) recorded in {state.path}", file=sys.stderr)

    if options.phase != "submit":
        yield from _wait(adapter, model, state, reqs, options, missing, progress, desc)

    errors = [(i, why) for i, why in missing if options.on_missing == "error" or not _online_ok(why)]
    for item_id, why in errors:
        gone = "the batch ended without a result for this item (expired or cancelled)"
        yield error_row(item_id, why or model._provider_error(gone), 0.0)
    rest = [by_id[i] for i, why in missing if options.on_missing == "online" and _online_ok(why)]
    if rest:
        log.info("%d item(s) the batches did not answer: running them online", len(rest))
        yield from online(rest)


def _online_ok(exc: BaseException | None) -> bool:
    """Expired/cancelled (no result) and retryable errors go online; a request the provider refused
    (400) would be refused online too: its error row stands."""
    return exc is None or bool(getattr(exc, "retryable", False))


def _chunks(
    adapter: BatchAdapter, options: BatchOptions, ids: list[str], reqs: dict[str, GenerationRequest]
) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    import json

    limit = min(adapter.max_requests, options.max_requests or adapter.max_requests)
    chunk: list[tuple[str, dict[str, Any]]] = []
    size = 0
    for item_id in ids:
        line = adapter.line(custom_id_for(item_id), reqs[item_id])
        n = len(json.dumps(line, ensure_ascii=False).encode("utf-8")) + 1
        if chunk and (len(chunk) >= limit or size + n > adapter.max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append((item_id, line))
        size += n
    if chunk:
        yield chunk


def _find_unrecorded(adapter: BatchAdapter, state: BatchState) -> list[BatchRecord]:
    """Records a killed run left without a batch id: each batch the provider did create is adopted (its
    id recorded), so its items are polled, never submitted again; for one never created, an input file
    uploaded but not recorded is looked up by its name. Returns the records of batches never created. A provider that cannot be asked raises: the run stops rather than pay twice."""
    never = []
    for rec in [b for b in state.batches if b.id is None and not b.collected]:
        found = None
        if rec.token is not None or rec.input_file_id is not None:
            known = {str(b.id) for b in state.batches if b.id is not None}
            mark = Mark(rec.submitted_at, rec.after)
            found = adapter.find(rec.token, mark, len(rec.items), rec.input_file_id, known)
        if found is None:
            if rec.input_file_id is None and rec.token is not None:  # uploaded, not recorded?
                rec.input_file_id = adapter.find_file(rec.token, Mark(rec.submitted_at, rec.after))
                state.save()
            never.append(rec)
            continue
        rec.id = found
        state.save()
        log.info("found %s batch %s, created by a run stopped before it recorded the id", rec.provider, found)
    return never


def _submit(
    adapter: BatchAdapter,
    model: Any,
    state: BatchState,
    chunk: list[tuple[str, dict[str, Any]]],
    reqs: dict[str, GenerationRequest],
    rec: BatchRecord | None = None,
) -> list[tuple[str, BaseException | None]]:
    """Submit one batch, paid once whatever kills the run: its record (an idempotency token, the time)
    is saved before anything is sent, the input file id as soon as it exists, the batch id as soon as
    the provider gives it; a re-run finds a batch created but not recorded (:func:`_find_unrecorded`).
    Its items come back as missing if the submission failed. ``rec``: an earlier try's record."""
    if rec is None:
        rec = BatchRecord(adapter.provider, model.model_id, {line["custom_id"]: i for i, line in chunk})
        state.batches.append(rec)
    rec.token = rec.token or uuid.uuid4().hex
    rec.submitted_at = time.time()  # find() looks for the batch from here on

    def on_file(file_id: str) -> None:
        rec.input_file_id = file_id
        state.save()

    try:
        rec.after = adapter.newest()
        state.save()
        crash_point("before_submit")
        rec.id = adapter.submit([line for _, line in chunk], on_file, rec.token, rec.input_file_id)
    except Exception as exc:
        status = getattr(exc, "status", None)
        if status is None or status >= 500:  # no answer (a timeout, a lost connection): created or not?
            try:
                known = {str(b.id) for b in state.batches if b.id is not None}
                mark = Mark(rec.submitted_at, rec.after)
                rec.id = adapter.find(rec.token, mark, len(chunk), rec.input_file_id, known)
            except Exception:  # noqa: BLE001 - the provider cannot be asked: the record stays for a re-run
                state.save()
                raise exc from None
        if rec.id is None:
            state.batches.remove(rec)
            state.save()
            log.warning("submitting a batch of %d failed: %s", len(chunk), exc)
            return [(i, exc) for i, _ in chunk]
    state.save()
    crash_point("after_record")
    rec.submitted_at = time.time()
    log.info("submitted %s batch %s (%d requests)", adapter.provider, rec.id, len(chunk))
    return []


def _wait(
    adapter: BatchAdapter,
    model: Any,
    state: BatchState,
    reqs: dict[str, GenerationRequest],
    options: BatchOptions,
    missing: list[tuple[str, BaseException | None]],
    progress: bool,
    desc: str,
) -> Rows:
    active = [rec for rec in state.running()]
    if not active:
        return
    total = sum(sum(1 for i in rec.items.values() if i in reqs) for rec in active)
    bar = _bar(total, progress, desc)
    start = time.monotonic()
    delay = options.poll_s
    seen: dict[str, BatchProgress] = {}
    try:
        while active:
            for rec in list(active):
                assert rec.id is not None
                p = adapter.progress(rec.id)
                seen[rec.id] = p
                if p.ended:
                    yield from _collect(adapter, model, rec, reqs, missing, p)
                    rec.collected = True
                    state.save()
                    active.remove(rec)
            if bar is not None:
                done = sum(p.done + p.failed + p.expired for p in seen.values())
                bar.n = min(done, total)
                bar.set_postfix(
                    batches=len(active),
                    failed=sum(p.failed for p in seen.values()),
                    expiring=sum(p.expired for p in seen.values()),
                    refresh=False,
                )
                bar.refresh()
            if not active:
                break
            collecting = options.phase == "collect"  # one look only: the sweep did the waiting
            if collecting or (options.max_wait is not None and time.monotonic() - start > options.max_wait):
                waited = "when the sweep stopped waiting" if collecting else "after"
                for rec in active:
                    for item_id in rec.items.values():
                        if item_id in reqs:
                            yield error_row(
                                item_id,
                                model._provider_error(
                                    f"batch {rec.id} still running {waited} runner.provider_batch.max_wait="
                                    f"{options.max_wait}s: re-run into the same dir to collect it, or "
                                    f"`modelfactory batches cancel {_dir(state)}`"
                                ),
                                time.time() - rec.submitted_at,
                            )
                return
            time.sleep(delay)
            delay = min(delay * 1.5, options.poll_s * 8)
    finally:
        if bar is not None:
            bar.close()


def interrupted_note(results_path: Path | None) -> str | None:
    """What Ctrl-C leaves behind in batch mode: the batches recorded as running in the run dir (they keep
    running, paid for) and how to collect or cancel them; None if there are none. Read from the state
    file, so it holds wherever the interrupt lands (submitting, waiting, or writing a row)."""
    state = BatchState.load(state_path(results_path))
    running = state.running()
    unrecorded = [b for b in state.batches if b.id is None and not b.collected]
    if not running and not unrecorded:
        return None
    if not running:  # interrupted mid-submission: the batch may exist without its id in batches.json
        return (
            f"\ninterrupted while submitting a batch: re-run the same command into the same dir "
            f"({_dir(state)}); it looks the batch up at the provider before submitting anything."
        )
    ids = ", ".join(str(rec.id) for rec in running)
    providers = ", ".join(sorted({rec.provider for rec in running}))
    return (
        f"\ninterrupted: batch(es) {ids} keep running at {providers} (already paid for). "
        f"Re-run the same command into the same dir ({_dir(state)}) to collect them, or "
        f"`modelfactory batches cancel {_dir(state)}` to cancel them."
    )


def _dir(state: BatchState) -> str:
    return str(state.path.parent) if state.path is not None else "<run dir>"


def _collect(
    adapter: BatchAdapter,
    model: Any,
    rec: BatchRecord,
    reqs: dict[str, GenerationRequest],
    missing: list[tuple[str, BaseException | None]],
    p: BatchProgress,
) -> Rows:
    latency = time.time() - rec.submitted_at
    got = dict(adapter.results(str(rec.id))) if p.total or p.done or p.failed else {}
    for custom_id, item_id in rec.items.items():
        req = reqs.get(item_id)
        if req is None:
            continue  # done since, or not part of this job
        reply = got.get(custom_id)
        if reply is None:
            why = model._provider_error(f"batch {rec.id}: {p.message}") if p.message else None
            missing.append((item_id, why))
        elif isinstance(reply, Exception):
            if getattr(reply, "retryable", False):
                missing.append((item_id, reply))
            else:
                yield _tag(error_row(item_id, reply, latency), rec)
        else:
            if reply.content is not None and req.stop_sequences:
                reply.content = trim_at_stop(reply.content, req.stop_sequences)
            model._cache_store(req, reply)
            yield _tag(ok_row(item_id, reply, latency), rec)


def _tag(row: dict[str, Any], rec: BatchRecord) -> dict[str, Any]:
    row["batch"] = True  # priced at the batch rate
    row["batch_id"] = rec.id
    return row


def _bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"{desc} (batch)", unit="item", file=sys.stderr, dynamic_ncols=True)


@dataclass
class BatchGroup:
    """One run dir's batches, for :func:`wait_all`: its adapter, its ``batches.json``, its own wait limit."""

    name: str  # how messages name it (the job dir)
    adapter: BatchAdapter
    state: BatchState
    max_wait: float | None = None


def wait_all(
    groups: Sequence[BatchGroup],
    poll_s: float,
    *,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, float]:
    """Poll every running batch of every group together until all have ended, or a group's
    ``max_wait`` has passed (its batches keep running). Collects nothing: each run dir's own
    ``phase=collect`` run reads the results. Returns the seconds each group was waited for.

    A failing poll (a network blip) is logged and tried again at the next round; after
    :data:`MAX_POLL_FAILURES` in a row that batch is no longer waited for."""
    start = clock()
    pending = {(g.name, str(rec.id)): (g, rec) for g in groups for rec in g.state.running()}
    total = sum(len(rec.items) for _, rec in pending.values())
    waited = {g.name: 0.0 for g in groups}
    seen: dict[tuple[str, str], BatchProgress] = {}
    failures: dict[tuple[str, str], int] = {}
    bar = _bar(total, progress, f"{len(groups)} job(s)")
    delay = poll_s
    try:
        while pending:
            for key, (g, rec) in list(pending.items()):
                try:
                    p = g.adapter.progress(str(rec.id))
                except Exception as exc:  # noqa: BLE001 - the next round tries again
                    failures[key] = failures.get(key, 0) + 1
                    log.warning("%s: polling batch %s failed: %s", g.name, rec.id, exc)
                    if failures[key] >= MAX_POLL_FAILURES:  # its collecting run will say what is wrong
                        del pending[key]
                    continue
                failures.pop(key, None)
                seen[key] = p
                if p.ended:
                    del pending[key]
                    waited[g.name] = clock() - start
            for g in groups:
                if g.max_wait is not None and clock() - start > g.max_wait:
                    for key in [k for k, (h, _) in pending.items() if h is g]:
                        del pending[key]
                        waited[g.name] = clock() - start
            if bar is not None:
                bar.n = min(sum(p.done + p.failed + p.expired for p in seen.values()), total)
                bar.set_postfix(batches=len(pending), refresh=False)
                bar.refresh()
            if not pending:
                break
            sleep(delay)
            delay = min(delay * 1.5, poll_s * 8)
    finally:
        if bar is not None:
            bar.close()
    return waited
