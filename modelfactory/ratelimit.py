"""``requests_per_minute``: a limiter shared by threads and asyncio tasks alike.

It spaces requests evenly (the generic cell rate algorithm): each caller *reserves* the next free slot
under a lock held for microseconds, then waits for it outside the lock, with the clock's ``sleep`` in a
thread or its ``asleep`` in a coroutine, so the event loop is never blocked and threads and tasks can share
one limiter. Slots are handed out first come, first served. ``burst`` lets that many requests go at once
after an idle spell (default 1: strictly ``60 / requests_per_minute`` seconds apart).

The clock is :func:`modelfactory.clock.get_clock`'s, looked up at every call, unless one is given: a test
swaps in a virtual one, which records every wait, to check the spacing exactly.

A slot reserved by a task that is then cancelled is not given back: the limiter errs on the slow side.
"""

from __future__ import annotations

import threading

from .clock import Clock, get_clock

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(
        self,
        requests_per_minute: float,
        *,
        burst: int = 1,
        clock: Clock | None = None,
    ) -> None:
        if not requests_per_minute > 0:
            raise ValueError("requests_per_minute must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.requests_per_minute = float(requests_per_minute)
        self.interval = 60.0 / self.requests_per_minute
        self.burst = burst
        self._fixed_clock = clock  # None: the current process clock, looked up at every call
        self._tat: float | None = None  # theoretical arrival time of the next request
        self._lock = threading.Lock()

    @property
    def clock(self) -> Clock:
        return self._fixed_clock or get_clock()

    def reserve(self, clock: Clock | None = None) -> float:
        """Take the next slot; return how many seconds the caller must wait before sending."""
        with self._lock:
            now = (clock or self.clock).monotonic()
            tat = now if self._tat is None else max(self._tat, now)
            allowed_at = tat - (self.burst - 1) * self.interval
            self._tat = tat + self.interval
            return max(0.0, allowed_at - now)

    def acquire(self) -> float:
        """Block this thread until it may send; returns the seconds waited."""
        clock = self.clock
        wait = self.reserve(clock)
        if wait > 0:
            clock.sleep(wait)
        return wait

    async def aacquire(self) -> float:
        """Wait (without blocking the event loop) until this task may send; returns the seconds waited."""
        clock = self.clock
        wait = self.reserve(clock)
        if wait > 0:
            await clock.asleep(wait)
        return wait

    def __repr__(self) -> str:
        return f"RateLimiter(requests_per_minute={self.requests_per_minute:g}, burst={self.burst})"
