"""torch imported with a wait policy for its OpenMP threads that holds when other processes load the CPU.

Why: torch's CPU wheels run their parallel regions (oneDNN matmuls, elementwise ops) on the libgomp they
bundle. At the end of each region a thread waits for the rest of its team, by default *spinning* up to
``GOMP_SPINCOUNT`` = 300000 iterations (about 3 ms) before it sleeps, whenever libgomp counts no more
threads of its own than CPUs. It does not count other processes: beside CPU-bound processes the peer a
thread waits for is often descheduled, so each of the hundreds of regions of a decode step can burn a
whole spin while the peer waits for the core the spinner holds. Measured on 2 cores (load 10 from other
work, plus two CPU-bound processes; SmolLM2-135M bfloat16, a 9-token reply, calls in the thread that
loaded the model): 39-48 s and 9-10 CPU-seconds per call with libgomp's default, 1.2-1.6 s and 0.45
with ``OMP_WAIT_POLICY=PASSIVE``; a shorter spin was not enough (``GOMP_SPINCOUNT=10000``: 4.5-10 s, 2
CPU-s). Which thread was hit looked arbitrary (serve's non-streamed requests but not its streamed ones;
the main thread but not a pool thread) because libgomp cuts the spin to 100 iterations once the
process has more OpenMP threads than CPUs: a stream's fresh generate thread brought its own team, and
with it the short spin, to everything running meanwhile. ``bench/omp_wait_policy.py`` shows it through
``modelfactory serve``.

So, before modelfactory imports torch (the first time, in this process), it sets
``OMP_WAIT_POLICY=PASSIVE`` (threads sleep as soon as they wait) unless the user set
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``: set either to keep your own policy (``GOMP_SPINCOUNT=300000``
is libgomp's default). libgomp reads them once, when torch loads it: a process that imported torch
before modelfactory keeps what it had (:func:`wait_policy` says what the process asked for).
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["POLICY", "POLICY_VARS", "import_torch", "wait_policy"]

POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}
POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # a user who sets either keeps their own policy


def import_torch() -> Any:
    """``import torch``; the first import in the process sets :data:`POLICY` first (see the module)."""
    if "torch" not in sys.modules and not any(v in os.environ for v in POLICY_VARS):
        os.environ.update(POLICY)
    import torch

    return torch


def wait_policy() -> str:
    """The OpenMP wait policy the environment asks for (libgomp's default when it names none)."""
    named = [f"{v}={os.environ[v]}" for v in POLICY_VARS if v in os.environ]
    return ", ".join(named) or "libgomp's default (spin up to ~3 ms)"
