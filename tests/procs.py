"""Python scripts the suite runs in a process of their own (``python -c``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

FREEZE_AT_EXIT = "\nimport gc as _gc\n_gc.freeze()\n"
"""A script's last lines, once it has printed what the test reads: CPython's teardown runs full garbage
collections over every object still alive (~0.8 s after torch and transformers, ~0.5 s after litellm,
testing nothing); frozen objects are left out of them, as run.py does at its exit (modelfactory._hydra_app).
Only the teardown changes: atexit hooks still run, and the test reads the output and the exit status."""


def run_script(
    code: str, *, cwd: Path, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -c code`` (ending in :data:`FREEZE_AT_EXIT`) from ``cwd``, its output captured as text;
    ``env``: the whole environment (default: this process's)."""
    return subprocess.run(
        [sys.executable, "-c", code + FREEZE_AT_EXIT],
        cwd=cwd,
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
