"""``requests_per_minute``: a limiter shared by threads and asyncio tasks alike.

It spaces requests evenly (the generic cell rate algorithm): each caller *reserves* the next free slot
under a lock held for microseconds, then waits for it outside the lock, with ``time.sleep`` in a thread or
``asyncio.sleep`` in a coroutine, so the event loop is never blocked and threads and tasks can share one
limiter. Slots are handed out first come, first served. ``burst`` lets that many requests go at once
after an idle spell (default 1: strictly ``60 / requests_per_minute`` seconds apart).

A slot reserved by a task that is then cancelled is not given back: the limiter errs on the slow side.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(
        self,
        requests_per_minute: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not requests_per_minute > 0:
            raise ValueError("requests_per_minute must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.requests_per_minute = float(requests_per_minute)
        self.interval = 60.0 / self.requests_per_minute
        self.burst = burst
        self._clock = clock
        self._tat: float | None = None  # theoretical arrival time of the next request
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot; return how many seconds the caller must wait before sending."""
        with self._lock:
            now = self._clock()
            tat = now if self._tat is None else max(self._tat, now)
            allowed_at = tat - (self.burst - 1) * self.interval
            self._tat = tat + self.interval
            return max(0.0, allowed_at - now)

    def acquire(self) -> float:
        """Block this thread until it may send; returns the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            time.sleep(wait)
        return wait

    async def aacquire(self) -> float:
        """Wait (without blocking the event loop) until this task may send; returns the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        return wait

    def __repr__(self) -> str:
        return f"RateLimiter(requests_per_minute={self.requests_per_minute:g}, burst={self.burst})"
