"""torch's OpenMP threads: libgomp's spin while the machine is idle, short waits while other work competes.

Why: torch's CPU wheels run their parallel regions (oneDNN matmuls, elementwise ops) on the libgomp they
bundle. At the end of each region a thread waits for the rest of its team, by default *spinning* up to
``GOMP_SPINCOUNT`` = 300000 iterations (about 3 ms) before it sleeps, whenever libgomp counts no more
threads of its own than CPUs. It does not count other processes: beside CPU-bound processes the peer a
thread waits for is often descheduled, so each of the hundreds of regions of a decode step can burn a
whole spin while the peer waits for the core the spinner holds (2 cores, two CPU-bound processes,
SmolLM2-135M bfloat16, a 9-token reply: 39-48 s per call with the spin, 1.2-1.6 s with
``OMP_WAIT_POLICY=PASSIVE``; ``GOMP_SPINCOUNT=10000``: 4.5-10 s). On an idle machine the spin is what
makes torch fast: PASSIVE (wake the team at each region) cost up to 2x wall there, which is why
modelfactory no longer sets it.

What it does instead (unless the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``: their policy is
kept): a daemon thread (:class:`ContentionGuard`) reads, four times a second, how long this process's
threads waited for a CPU (their run-queue delay in ``/proc/self/task/*/schedstat``). While they wait
(other processes want the cores) it *throttles*: a parked thread holds an idle OpenMP team of more
threads than CPUs, and libgomp, counting more threads than CPUs, cuts every wait's spin in the process
to 100 iterations (its throttled spin count), which behaves as PASSIVE. When the waiting stops for two
seconds the team is let go and the spin comes back. libgomp checks that count at each wait, so this
works whenever torch was imported, by modelfactory or before it. ``bench/omp_wait_policy.py`` measures the
policies side by side, idle and beside CPU-bound processes; :func:`wait_policy` says what applies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .._local import usable_cpus

__all__ = [
    "POLICY_VARS",
    "ContentionGuard",
    "Hysteresis",
    "contention_guard",
    "import_torch",
    "wait_policy",
    "waiting_share",
]

POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # a user who sets either keeps their own policy


def import_torch() -> Any:
    """``import torch``, with :class:`ContentionGuard` watching its OpenMP threads (see the module)."""
    import torch

    if not any(v in os.environ for v in POLICY_VARS):
        contention_guard(torch)
    return torch


@dataclass
class Hysteresis:
    """When to throttle, from the share of a second this process's threads spent waiting for a CPU.

    Throttle after ``engage_samples`` samples at or above ``engage_at`` in a row; spin again after
    ``release_samples`` at or below ``release_at``. Idle, a spinning team waits ~0-3% (a short process
    of the machine's own taking a core for a moment); beside CPU-bound processes, 30-100%."""

    engage_at: float = 0.25
    release_at: float = 0.05
    engage_samples: int = 2
    release_samples: int = 8
    throttled: bool = False
    _above: int = field(default=0, repr=False)
    _below: int = field(default=0, repr=False)

    def update(self, waiting: float) -> bool:
        """One sample in; whether to throttle now."""
        self._above = self._above + 1 if waiting >= self.engage_at else 0
        self._below = self._below + 1 if waiting <= self.release_at else 0
        if not self.throttled and self._above >= self.engage_samples:
            self.throttled = True
        elif self.throttled and self._below >= self.release_samples:
            self.throttled = False
        return self.throttled


def run_delays() -> dict[int, int]:
    """Nanoseconds each thread of this process has spent runnable but waiting for a CPU, by thread id."""
    delays: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/schedstat") as f:
                    delays[int(tid)] = int(f.read().split()[1])
            except (OSError, ValueError, IndexError):
                continue  # the thread ended meanwhile
    return delays


def waiting_share(before: dict[int, int], after: dict[int, int], seconds: float) -> float:
    """Thread-seconds spent waiting for a CPU per second between two :func:`run_delays` readings (a
    thread that started meanwhile counts from 0; one that ended is left out)."""
    if seconds <= 0:
        return 0.0
    waited = sum(max(0, ns - before.get(tid, 0)) for tid, ns in after.items())
    return waited / 1e9 / seconds


def _libgomp(torch: Any) -> Any | None:
    """torch's libgomp, already loaded (ctypes returns the loaded copy), or None (no libgomp: another
    OpenMP runtime or none, e.g. macOS; nothing to guard)."""
    found: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)  # address, perms, offset, dev, inode[, path]
            path = fields[5].strip() if len(fields) == 6 else ""
            if os.path.basename(path).startswith("libgomp") and path not in found:
                found.append(path)
    if not found:
        return None
    torch_dir = os.path.dirname(os.path.dirname(torch.__file__))  # site-packages: torch/lib, torch.libs
    found.sort(key=lambda p: not p.startswith(torch_dir))
    try:
        lib = ctypes.CDLL(found[0])
        lib.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        lib.GOMP_parallel.restype = None
    except (OSError, AttributeError):
        return None
    return lib


class ContentionGuard:
    """Throttles libgomp's spin while this process waits for CPUs (see the module).

    ``engage()`` / ``release()`` act at once; :meth:`start` runs the monitor that calls them."""

    def __init__(self, gomp: Any, interval: float = 0.25, hysteresis: Hysteresis | None = None) -> None:
        self._gomp = gomp
        self.interval = interval
        self.hysteresis = hysteresis or Hysteresis()
        # more threads than CPUs however many libgomp found (it counts the process's affinity mask)
        self.width = usable_cpus() + 1
        self._lock = threading.Lock()
        self._holder: threading.Thread | None = None
        self._let_go = threading.Event()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self.last_share = 0.0

    @property
    def throttled(self) -> bool:
        return self._holder is not None

    def engage(self) -> None:
        """Hold an idle team of ``width`` threads in a parked thread: libgomp now counts more threads than
        CPUs and every wait in the process spins only 100 iterations before it sleeps."""
        with self._lock:
            if self._holder is not None:
                return
            ready, let_go = threading.Event(), threading.Event()
            # the region's body: any C function that returns at once (sched_yield ignores the argument)
            noop = ctypes.cast(ctypes.CDLL(None).sched_yield, ctypes.c_void_p)

            def hold() -> None:
                self._gomp.GOMP_parallel(noop, None, self.width, 0)
                ready.set()
                let_go.wait()  # the thread's end frees its team (libgomp's thread destructor)

            holder = threading.Thread(target=hold, name="modelfactory-omp-throttle", daemon=True)
            holder.start()
            ready.wait(10)
            self._holder, self._let_go = holder, let_go

    def release(self) -> None:
        """Let the team go: libgomp counts its threads off and the spin comes back."""
        with self._lock:
            holder, self._holder = self._holder, None
            if holder is not None:
                self._let_go.set()
                holder.join(10)

    def start(self) -> None:
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._watch, name="modelfactory-omp-guard", daemon=True)
            self._monitor.start()

    def stop(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(10)
            self._monitor = None
        self.release()

    def _watch(self) -> None:
        before, then = run_delays(), time.monotonic()
        while not self._stop.wait(self.interval):
            now, delays = time.monotonic(), run_delays()
            self.last_share = waiting_share(before, delays, now - then)
            before, then = delays, now
            wanted = self.hysteresis.update(self.last_share)
            if wanted != self.throttled:  # a change of state: most samples change nothing
                (self.engage if wanted else self.release)()


_GUARD: dict[str, ContentionGuard | None] = {}
_GUARD_LOCK = threading.Lock()


def contention_guard(torch: Any | None = None) -> ContentionGuard | None:
    """The process's guard, started on the first call with ``torch`` (None without libgomp or /proc)."""
    with _GUARD_LOCK:
        if "guard" not in _GUARD and torch is not None:
            gomp = _libgomp(torch) if sys.platform.startswith("linux") else None
            guard = ContentionGuard(gomp) if gomp is not None and os.path.exists("/proc/self/task") else None
            if guard is not None:
                guard.start()
            _GUARD["guard"] = guard
        return _GUARD.get("guard")


def _forget_in_child() -> None:  # a forked child has none of the parent's threads: start again there
    global _GUARD_LOCK
    _GUARD.clear()
    _GUARD_LOCK = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def wait_policy() -> str:
    """What decides how torch's OpenMP threads wait in this process."""
    named = [f"{v}={os.environ[v]}" for v in POLICY_VARS if v in os.environ]
    if named:
        return ", ".join(named)
    guard = _GUARD.get("guard")
    if guard is None:
        why = (
            "no libgomp to guard in this process"
            if "guard" in _GUARD
            else "torch not imported by modelfactory yet"
        )
        return f"libgomp's default (spin up to ~3 ms; {why})"
    state = "throttled: this process waits for CPUs" if guard.throttled else "spinning: the CPUs are free"
    return f"modelfactory's contention guard ({state}; waiting share {guard.last_share:.2f})"
