"""Shared by the benchmarks: a local OpenAI-compatible server in its own process, and timing helpers."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@contextmanager
def local_server() -> Iterator[str]:
    """modelfactory.testing's fake OpenAI server in its own process (not sharing our GIL); yields its URL."""
    proc = subprocess.Popen([PY, "-m", "modelfactory.testing"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class Served:
    """A ``modelfactory serve`` process: its URL (no /v1), the model name it answers to (any other is a
    404), and the start-up lines it printed before it announced itself."""

    proc: subprocess.Popen[str]
    url: str
    name: str
    startup: list[str] = field(default_factory=list)


@contextmanager
def serve(overrides: list[str], env: dict[str, str], run_dir: str) -> Iterator[Served]:
    """``modelfactory serve <overrides>`` on a free port in its own process until the block ends; its
    output is drained in a thread once it has started, so a chatty server never blocks on a full pipe."""
    cmd = [PY, "-m", "modelfactory.cli", "serve", *overrides, "server.port=0", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        startup: list[str] = []
        for line in proc.stdout:
            if line.startswith("modelfactory serve:"):
                url = line.split(" on ", 1)[1].split("/v1", 1)[0]
                served = Served(proc, url, line.split("'")[1], startup)
                break
            startup.append(line)
        else:
            raise SystemExit(f"serve did not start: {overrides}\n{''.join(startup)[-2000:]}")
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield served
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all its threads) a process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OPENAI_API_KEY", "HF_TOKEN", "AZURE_OPENAI_API_KEY"):
        env.pop(var, None)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def time_command(cmd: list[str], env: dict[str, str], cpu_log: list[float] | None = None) -> float:
    """Wall seconds of one run of ``cmd``; its user+system CPU seconds are appended to ``cpu_log``.

    CPU time is the steadier figure on a shared 2-core machine; wall time is what a user waits.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    if cpu_log is not None:
        cpu_log.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return elapsed


def alternate(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each contender once per round, in rotating order, so drift hits all of them alike."""
    names = list(contenders)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            samples[name].append(contenders[name]())
    return samples


def report(samples: dict[str, list[float]], ours: str, unit: str = "s") -> None:
    medians = {n: statistics.median(v) for n, v in samples.items()}
    for name, med in medians.items():
        print(f"{name:>28}: median {med:.4f} {unit}  (n={len(samples[name])})")
    for name, med in medians.items():
        if name != ours:
            print(f"{'ratio ' + ours + ' / ' + name:>48}: {medians[ours] / med:.3f}x")
