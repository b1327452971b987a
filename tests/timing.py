"""Deterministic stand-ins for a stopwatch, so that no test depends on how busy the machine is.

- :class:`VirtualClock` (installed with :func:`modelfactory.clock.use_clock`, or the ``virtual_clock``
  fixture): the retry loop and the rate limiter wait on it; it records every wait they ask for and, unless
  frozen, moves its time on by exactly that much, at once.
- :func:`together`: a barrier that holds each caller until ``n`` are inside at once. A test that needs
  ``n`` calls to overlap makes each wait at it: overlap releases them at once; one at a time breaks the
  barrier after ``timeout`` and the in-flight high-water mark the test asserts stays below ``n``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class VirtualClock:
    """Time passes only when someone sleeps (``frozen=False``), or never (``frozen=True``).

    Frozen is for several threads or tasks at once: each wait is then what the limiter reserved for that
    caller, independent of the order in which the others ran. ``sleeps`` are blocking waits (a thread),
    ``asleeps`` the event loop's.
    """

    def __init__(self, start: float = 1000.0, *, frozen: bool = False) -> None:
        self.start = self.now = start
        self.frozen = frozen
        self.sleeps: list[float] = []
        self.asleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def _wait(self, seconds: float, log: list[float]) -> None:
        with self._lock:
            log.append(seconds)
            if not self.frozen:
                self.now += seconds

    def sleep(self, seconds: float) -> None:
        self._wait(seconds, self.sleeps)

    async def asleep(self, seconds: float) -> None:
        self._wait(seconds, self.asleeps)
        await asyncio.sleep(0)  # a wait is a point where other tasks run


def together(n: int, timeout: float = 30.0) -> threading.Barrier:
    """A barrier of ``n`` parties; see :func:`meet`."""
    return threading.Barrier(n, timeout=timeout)


def meet(barrier: threading.Barrier | None) -> None:
    """Wait until the barrier's parties are all in (or it broke: then go on, the count will tell)."""
    if barrier is not None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
