"""Loaded OpenVINO GenAI pipelines, one per source and load settings, each driven by one engine thread.

Why an engine thread: a ``ContinuousBatchingPipeline`` decodes every request it holds in one step, and
requests may join between steps. Every call (from any thread: the runner's batch, serve's clients, an
async caller) adds its request and reads its tokens as the steps produce them; one thread runs ``step``
while any request is unfinished. So concurrent callers share each forward pass instead of queueing.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ...errors import BackendError, MissingDependencyError
from .._local import WeightCache

__all__ = ["WEIGHTS", "cached_pipelines", "clear_cache"]

_EXTRA = "openvino"


@dataclass(eq=False)
class Request:
    """One request in the engine: its GenerationHandle, and the error of a step that failed it."""

    handle: Any
    error: BaseException | None = None

    def cancel(self) -> None:
        with contextlib.suppress(Exception):
            self.handle.cancel()


@dataclass(eq=False)
class _Runtime:
    pipe: Any  # openvino_genai.ContinuousBatchingPipeline; None once freed
    tokenizer: Any  # openvino_genai.Tokenizer
    key: tuple[Any, ...]
    directory: str
    context_length: int | None
    chat_template: str
    eos_ids: frozenset[int]
    load_s: float = 0.0
    converted: bool = False
    freed: bool = False
    cv: threading.Condition = field(default_factory=threading.Condition)
    ids: Iterator[int] = field(default_factory=itertools.count)
    thread: threading.Thread | None = None
    steps: int = 0  # engine steps started (tests and stats)
    most_running: int = 0  # the most requests one step decoded together
    live: set[Request] = field(default_factory=set)
    tok_lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, ids: list[int], config: Any) -> Request:
        """Add a request (prompt token ids) to the engine."""
        import numpy as np
        import openvino

        tensor = openvino.Tensor(np.asarray([ids], dtype=np.int64))
        with self.cv:
            if self.freed:
                raise BackendError("the model was freed during the call")
            request = Request(self.pipe.add_request(next(self.ids), tensor, config))
            self.live.add(request)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="openvino-engine", daemon=True)
                self.thread.start()
            self.cv.notify_all()
        return request

    def _loop(self) -> None:
        while True:
            with self.cv:
                while not self.freed and not self.pipe.has_non_finished_requests():
                    if not self.cv.wait(timeout=30.0):
                        self.thread = None  # idle: a later submit starts a fresh thread
                        return
                if self.freed:
                    return
                pipe = self.pipe
                # counted before it runs: a caller that sees its request end (inside step) sees it counted
                self.steps += 1
            try:
                pipe.step()
            except Exception as exc:
                # A request the engine cannot run (a grammar xgrammar cannot compile) fails the whole step:
                # every request in it gets the error and is cancelled, and the engine goes on with the
                # next ones (the pipeline is usable again once they are dropped).
                with self.cv:
                    for request in self.live:
                        request.error = exc
                        request.cancel()
                    self.live.clear()
                    self.cv.notify_all()
                continue
            with self.cv:
                try:
                    running = int(pipe.get_metrics().scheduled_requests)
                except Exception:
                    running = 0
                self.most_running = max(self.most_running, running)
                self.cv.notify_all()

    def tokens(self, request: Request) -> Iterator[tuple[list[int], str]]:
        """The new token ids of ``request`` after each step, with the finish reason ('' while running)."""
        import openvino_genai

        running = openvino_genai.GenerationStatus.RUNNING
        handle = request.handle
        while True:
            with self.cv:
                while request.error is None and not handle.can_read() and handle.get_status() == running:
                    if self.freed:
                        raise BackendError("the model was freed during the call")
                    self.cv.wait(timeout=1.0)
                if request.error is not None:
                    raise BackendError(f"OpenVINO generation failed: {_first_line(request.error)}")
                status = handle.get_status()
                outputs = handle.read() if handle.can_read() else {}
                if status != running:
                    self.live.discard(request)
            new: list[int] = []
            reason = ""
            for out in outputs.values():  # one sequence per request (no beams)
                new = [int(t) for t in out.generated_ids]
                fr = out.finish_reason
                reason = "" if fr == openvino_genai.GenerationFinishReason.NONE else fr.name.lower()
            if status == openvino_genai.GenerationStatus.IGNORED:
                raise BackendError(
                    "OpenVINO ignored the request: its prompt does not fit the KV cache. Fix: raise "
                    "model.cache_size_gb or shorten the prompt"
                )
            done = status != running and not handle.can_read()
            yield new, (reason or ("stop" if done else ""))
            if done:
                return

    def decode(self, ids: list[int]) -> str:
        with self.tok_lock:
            return str(self.tokenizer.decode(ids))

    def encode(self, text: str) -> list[int]:
        with self.tok_lock:
            out = self.tokenizer.encode(text, add_special_tokens=False)
        return [int(t) for t in out.input_ids.data[0]]


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    # xgrammar's messages start with a time and its build path: keep what it says.
    return text.split(": ", 1)[1] if text.startswith("[") and ": " in text else text


def release(rt: _Runtime) -> None:
    """Stop ``rt``'s engine and drop its pipeline (calls in flight get a BackendError)."""
    with rt.cv:
        rt.freed = True
        rt.cv.notify_all()
        thread = rt.thread
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=60)
    rt.pipe = None


WEIGHTS: WeightCache[_Runtime] = WeightCache(release)


def clear_cache() -> int:
    """Free every loaded OpenVINO pipeline; returns how many. Models load again on their next call."""
    return WEIGHTS.clear()


def cached_pipelines() -> list[dict[str, Any]]:
    """What is loaded: one dict per pipeline (IR directory, load time, engine steps)."""
    return [
        {"directory": rt.directory, "load_s": rt.load_s, "steps": rt.steps, "most_running": rt.most_running}
        for _, rt in WEIGHTS.items()
    ]


def import_genai() -> Any:
    try:
        import openvino_genai
    except ImportError:
        raise MissingDependencyError("openvino_genai", _EXTRA, "OpenVINOModel") from None
    return openvino_genai
