"""How torch's OpenMP threads wait under modelfactory (backends/transformers/_threads.py): libgomp's spin,
throttled by the contention guard while the process waits for CPUs.

Process-level cases run in a fresh process: libgomp reads its settings once, when torch loads it, and
reports them (``OMP_DISPLAY_ENV=VERBOSE`` prints ``GOMP_SPINCOUNT = '300000'`` under its default).
Whether a throttle took effect is read from the threads' own sleeps, not from a clock: after a parallel
region a spinning worker never sleeps by itself; a throttled one does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelfactory.backends.transformers._threads import Hysteresis, waiting_share

ROOT = Path(__file__).resolve().parents[2]
LOAD = (
    "import os\n"
    "from modelfactory import TransformersModel\n"
    "from modelfactory.backends.transformers._threads import wait_policy\n"
    "m = TransformersModel(model_id='builtin:tiny-llama', max_new_tokens=2).load()\n"
    "print('policy', os.environ.get('OMP_WAIT_POLICY'))\n"
    "print(wait_policy())\n"
)


def _run(code: str, **env: str) -> tuple[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), "OMP_DISPLAY_ENV": "VERBOSE", "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout, out.stderr


def _spin(stderr: str) -> str:
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", stderr)
    assert found, stderr[-2000:]
    return found.group(1)


def test_loading_a_model_keeps_libgomps_spin_and_starts_the_guard() -> None:
    pytest.importorskip("torch")
    stdout, stderr = _run(LOAD)
    assert "policy None" in stdout  # no wait policy forced on libgomp (PASSIVE cost 2x on an idle machine)
    assert _spin(stderr) == "300000"
    assert "modelfactory's contention guard" in stdout


@pytest.mark.parametrize(
    ("var", "value", "spin"), [("GOMP_SPINCOUNT", "300000", "300000"), ("OMP_WAIT_POLICY", "PASSIVE", "0")]
)
def test_a_policy_the_user_set_is_kept_and_not_guarded(var: str, value: str, spin: str) -> None:
    pytest.importorskip("torch")
    stdout, stderr = _run(LOAD, **{var: value})
    assert f"{var}={value}" in stdout and "guard" not in stdout
    assert _spin(stderr) == spin


def test_torch_imported_first_is_guarded_too() -> None:
    """libgomp checks its thread count at each wait, so the guard works however torch was loaded."""
    pytest.importorskip("torch")
    stdout, _ = _run("import torch\n" + LOAD)
    assert "modelfactory's contention guard" in stdout


THROTTLE = """
import os, threading, time
import torch
from modelfactory.backends.transformers._threads import ContentionGuard, _libgomp

torch.set_num_threads(2)
x = torch.ones(1 << 18)
main = threading.get_native_id()

def sleeps():
    # how often the process's other threads went to sleep by themselves (voluntary context switches)
    # while the main thread ran 150 parallel regions, sleeping 2 ms after each
    # per thread: a thread may end between listing /proc/self/task and reading its status (a CI pass beside
    # two hogs hit FileNotFoundError); one that ended is left out, one that started counts from zero
    def count():
        found = {}
        for tid in os.listdir("/proc/self/task"):
            if int(tid) != main:
                try:
                    with open(f"/proc/self/task/{tid}/status") as f:
                        found[tid] = next(int(l.split()[1]) for l in f if l.startswith("voluntary_ctxt_switches"))
                except (FileNotFoundError, ProcessLookupError):
                    pass
        return found
    before = count()
    for _ in range(150):
        x.add_(1)  # a region of a team of 2 (numel over torch's grain size)
        time.sleep(0.002)
    after = count()
    return sum(n - before.get(tid, 0) for tid, n in after.items())

guard = ContentionGuard(_libgomp(torch))  # no monitor: engaged and released by hand
sleeps()
spinning = sleeps()
guard.engage()
assert guard.throttled
throttled = sleeps()
guard.release()
assert not guard.throttled
again = sleeps()
print(spinning, throttled, again)
"""


def test_the_throttle_stops_the_spin_and_releasing_it_brings_the_spin_back() -> None:
    """With a spin that never ends (``GOMP_SPINCOUNT`` huge), the team's worker never sleeps between
    regions, however the machine schedules it; throttled (100 iterations) it sleeps after each one."""
    pytest.importorskip("torch")
    stdout, _ = _run(THROTTLE, OMP_NUM_THREADS="2", GOMP_SPINCOUNT="30000000000")
    spinning, throttled, again = map(int, stdout.split())
    assert spinning < 15 and again < 15, stdout  # a few, from torch's own housekeeping at most
    assert throttled >= 100, stdout  # ~one per region


GUARDED = """
import subprocess, sys, time
import torch
from modelfactory.backends.transformers._threads import contention_guard, wait_policy

torch.set_num_threads(2)
guard = contention_guard(torch)
hog = "import os\\nparent = os.getppid()\\nwhile os.getppid() == parent:\\n    pass\\n"
hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(3)]
x = torch.randn(256, 256)
deadline = time.monotonic() + 60
while not guard.throttled and time.monotonic() < deadline:
    for _ in range(50):
        x = torch.tanh(x @ x)
for hog in hogs:
    hog.kill()
print(guard.throttled, round(guard.last_share, 2))
print(wait_policy())
"""


@pytest.mark.slow
def test_the_guard_throttles_while_other_processes_take_the_cpus() -> None:
    """Three CPU-bound processes beside a team of 2 on this machine: the process waits for CPUs, the
    guard sees it and throttles (releasing is checked by :class:`Hysteresis` and the test above: a
    machine running the suite is never idle enough to show it end to end)."""
    pytest.importorskip("torch")
    stdout, _ = _run(GUARDED, OMP_NUM_THREADS="2")
    first, policy = stdout.splitlines()[:2]
    assert first.startswith("True"), stdout
    assert "throttled: this process waits for CPUs" in policy


def test_hysteresis_engages_after_two_busy_samples_and_releases_after_eight_quiet_ones() -> None:
    h = Hysteresis()
    assert [h.update(s) for s in (0.3, 0.1, 0.3)] == [False, False, False]  # not two in a row
    assert h.update(0.4) is True
    assert [h.update(s) for s in [0.0] * 7] == [True] * 7
    assert h.update(0.1) is True  # between the thresholds: neither busy nor quiet, the count starts over
    assert [h.update(0.0) for _ in range(8)] == [True] * 7 + [False]


@given(st.lists(st.floats(min_value=0, max_value=4, allow_nan=False), max_size=60))
def test_hysteresis_throttles_exactly_after_two_busy_samples_until_eight_quiet_ones(
    samples: list[float],
) -> None:
    h, throttled, busy, quiet = Hysteresis(), False, 0, 0
    for s in samples:
        busy = busy + 1 if s >= 0.25 else 0
        quiet = quiet + 1 if s <= 0.05 else 0
        throttled = (throttled or busy >= 2) and not (throttled and quiet >= 8)
        assert h.update(s) is throttled


def test_waiting_share_counts_new_threads_from_zero_and_leaves_ended_ones_out() -> None:
    before = {1: 1_000_000_000, 2: 5_000_000_000}
    after = {1: 1_500_000_000, 3: 250_000_000}  # 2 ended, 3 started
    assert waiting_share(before, after, 0.5) == pytest.approx((0.5 + 0.25) / 0.5)
    assert waiting_share(before, before, 1.0) == 0.0
    assert waiting_share(before, after, 0.0) == 0.0
