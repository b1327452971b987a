"""Time as the retry loop and the rate limiter see it: read the clock, wait, wait without blocking a loop.

Both look the clock up at every call (:func:`get_clock`), so :func:`use_clock` swaps it for a whole
process, models already built included. That is for tests: a virtual clock that records the waits the
policy asked for proves back-off and rate-limit spacing exactly, where a stopwatch would flake on a busy
machine. Production code never needs to call either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

__all__ = ["Clock", "SystemClock", "get_clock", "use_clock"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (only differences mean anything)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block this thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Wait ``seconds`` without blocking the event loop."""
        ...


class SystemClock:
    """The real one: ``time.monotonic``, ``time.sleep``, ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


_clock: Clock = SystemClock()


def get_clock() -> Clock:
    """The clock in use now (the system's unless :func:`use_clock` swapped it)."""
    return _clock


@contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Make ``clock`` the one every retry wait and rate limiter uses, until the block ends."""
    global _clock
    previous, _clock = _clock, clock
    try:
        yield clock
    finally:
        _clock = previous
