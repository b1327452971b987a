"""A real local Ray cluster on 127.0.0.1, for the Ray tests and the bench; stopped by its own PID.

``ray start --head --block`` is one process that owns the cluster: terminating it stops the cluster's
processes (never ``ray stop``: it stops every Ray cluster on the machine). Ray's files go to a temporary
directory of their own (scanned for planted keys by the tests), removed at the end.
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray on the loopback address: otherwise Ray resolves
127.0.0.1 to the node's network address and listens on every interface. A driver joining this cluster
needs the same variable (:data:`LOOPBACK_ENV`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRayCluster:
    """``with LocalRayCluster(num_cpus=2, env={...}) as cluster: cluster.address`` (``127.0.0.1:PORT``)."""

    def __init__(
        self, num_cpus: int = 2, env: dict[str, str] | None = None, start_timeout: float = 180
    ) -> None:
        self.num_cpus = num_cpus
        self.extra_env = dict(env or {})
        self.start_timeout = start_timeout
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = Path(tempfile.mkdtemp(prefix="mfray-", dir="/tmp"))  # short: socket paths must fit
        self.start_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalRayCluster:
        log_path = self.temp_dir / "ray-start.log"
        env = {**os.environ, **LOOPBACK_ENV, **self.extra_env}
        started = time.perf_counter()
        with log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "ray"),
                    "start",
                    "--head",
                    "--block",
                    "--node-ip-address=127.0.0.1",
                    f"--port={self.port}",
                    f"--num-cpus={self.num_cpus}",
                    "--object-store-memory=100000000",
                    "--include-dashboard=false",
                    "--disable-usage-stats",
                    f"--ray-client-server-port={free_port()}",
                    f"--dashboard-agent-listen-port={free_port()}",
                    f"--temp-dir={self.temp_dir}",
                ],
                cwd=self.temp_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.start_timeout
        while "Ray runtime started" not in log_path.read_text(errors="replace"):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                text = log_path.read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"ray start failed or timed out:\n{text[-3000:]}")
            time.sleep(0.25)
        self.start_s = time.perf_counter() - started
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
