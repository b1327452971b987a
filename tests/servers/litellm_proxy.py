"""The real LiteLLM proxy (``litellm[proxy]``) on 127.0.0.1, answering from canned mock responses.

It serves the OpenAI route ``/v1/chat/completions`` and the Azure route
``/openai/deployments/<name>/chat/completions?api-version=...`` for the models in :data:`MODEL_LIST`;
``litellm_params.mock_response`` makes it reply without calling any provider (nothing leaves the machine).
It refuses to start without ``LITELLM_MASTER_KEY``, which is then the key clients must send
(``Authorization: Bearer <key>`` or Azure's ``api-key: <key>``). Start-up takes ~6-8 s.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

MOCK_REPLY = "Hello from the LiteLLM proxy mock"
OPENAI_MODEL = "mock-gpt"  # model_name clients send on the OpenAI route
AZURE_DEPLOYMENT = "mock-azure"  # deployment name clients use on the Azure route
AZURE_API_VERSION = "2024-10-21"
MODEL_LIST = [
    {
        "model_name": OPENAI_MODEL,
        "litellm_params": {"model": "openai/mock-gpt", "api_key": "unused", "mock_response": MOCK_REPLY},
    },
    {
        "model_name": AZURE_DEPLOYMENT,
        "litellm_params": {
            "model": "azure/mock-azure",
            "api_base": "http://127.0.0.1:9",  # never contacted: the mock answers first
            "api_key": "unused",
            "api_version": AZURE_API_VERSION,
            "mock_response": MOCK_REPLY,
        },
    },
]
# Only these variables of the caller's environment reach the proxy: no keys, databases or proxies.
_PASS_ENV = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "SYSTEMROOT")


class ProxyStartError(RuntimeError):
    pass


def litellm_executable() -> str:
    """The ``litellm`` console script of the running interpreter's environment."""
    candidate = Path(sys.executable).parent / "litellm"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("litellm")
    if found:
        return found
    raise ProxyStartError(
        f"no `litellm` executable next to {sys.executable} or on PATH: pip install 'litellm[proxy]'"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiteLLMProxy:
    def __init__(
        self, workdir: Path, master_key: str = "sk-modelfactory-proxy-master", timeout: float = 60.0
    ):
        self.workdir = Path(workdir)
        self.master_key = master_key
        self.timeout = timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self.config_path = self.workdir / "litellm_proxy.yaml"
        self.log_path = self.workdir / "litellm_proxy.log"

    # -------------------------------------------------------------- addresses
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``.../v1``)."""
        return f"{self.url}/v1"

    # -------------------------------------------------------------- lifecycle
    def start(self) -> LiteLLMProxy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # JSON is YAML: no dependency on a YAML writer.
        self.config_path.write_text(json.dumps({"model_list": MODEL_LIST}, indent=2))
        exe = litellm_executable()
        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        env.update(
            LITELLM_MASTER_KEY=self.master_key,
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            PYTHONUNBUFFERED="1",
        )
        self.port = _free_port()
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [exe, "--config", str(self.config_path), "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() ends it and all its children
            )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def _wait_ready(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore HTTP(S)_PROXY
        deadline = time.monotonic() + self.timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise ProxyStartError(
                    f"the LiteLLM proxy exited with code {code} while starting\n{self.log_tail()}"
                )
            try:
                with opener.open(f"{self.url}/health/liveliness", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise ProxyStartError(f"the LiteLLM proxy was not ready after {self.timeout:.0f}s\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is not None:
            return
        # The group id stays ours until the leader is reaped, so signal the group first, watch the leader
        # without reaping it (WNOWAIT), end any stragglers, and only then reap.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    break
            except ChildProcessError:
                break
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "--- litellm proxy log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> LiteLLMProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
