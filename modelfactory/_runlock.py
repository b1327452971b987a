"""One run per output dir: an exclusive ``flock`` on ``<dir>/run.lock``, held for the run's life.

Two runs writing one dir pay for the same items twice and interleave their rows (and in batch mode trip on
each other's ``batches.json``). The lock is taken before the run reads or writes anything there; the OS
releases it when the process ends, however it ends (``kill -9`` included), so a stale lock never blocks a
resume. The file keeps who holds it (pid, host, start time) so the second run can say so. The file itself
is never deleted: unlinking a flock'ed file lets two processes each lock a different inode.

Re-entrant within a process (the app locks the job dir, then the runner locks the same dir again).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import ConfigError, Problem

__all__ = ["LOCK_FILE", "dir_lock"]

LOCK_FILE = "run.lock"

_held: dict[str, tuple[IO[str], int]] = {}  # resolved dir -> (open lock file, depth)
_guard = threading.Lock()


def _holder(f: IO[str]) -> str:
    try:
        f.seek(0)
        info: Any = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or not info.get("pid"):
        return "another process"
    started = info.get("started")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        if isinstance(started, (int, float))
        else "?"
    )
    return f"pid {info.get('pid')} on host {info.get('host', '?')} (started {when})"


@contextmanager
def dir_lock(directory: str | os.PathLike[str], key: str = "hydra.run.dir") -> Iterator[None]:
    """Hold the run lock of ``directory`` (created if needed) for the ``with`` block, or raise a
    :class:`ConfigError` (exit code 2) naming the process that holds it. ``key``: the setting that chose
    the dir, named in the error."""
    import fcntl

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    name = str(path.resolve())
    with _guard:
        if name in _held:
            f, depth = _held[name]
            _held[name] = (f, depth + 1)
        else:
            f = (path / LOCK_FILE).open("a+", encoding="utf-8")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _holder(f)
                f.close()
                raise ConfigError(
                    [
                        Problem(
                            key,
                            f"{path} is in use by another run: {holder} holds {path / LOCK_FILE}",
                            "wait for that run to end (or stop it), or give this run another directory "
                            "(e.g. hydra.run.dir=outputs/other)",
                        )
                    ],
                    title="output directory busy",
                ) from None
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
            f.flush()
            _held[name] = (f, 1)
    try:
        yield
    finally:
        with _guard:
            f, depth = _held[name]
            if depth > 1:
                _held[name] = (f, depth - 1)
            else:
                del _held[name]
                try:
                    f.seek(0)
                    f.truncate()  # no holder any more
                finally:
                    f.close()  # closing releases the flock
