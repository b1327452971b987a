"""Run untrusted Python (a model's code and its tests) in a child process, never in the caller's.

A small pool of sandbox workers: each is a fresh ``python -I`` (``-S`` too unless ``site_packages``)
started with an environment holding no proxies, keys or ``PYTHON*`` variables, inside its own network
namespace where ``unshare -n`` works (root, or user namespaces: no interface at all, not even loopback).
For each program a worker forks a child, which starts its own session, moves to a fresh temp dir (its
cwd, HOME and TMPDIR), sets ``resource.setrlimit`` on address space, CPU time, file size and core
dumps, disables the socket module, and runs the program; the worker kills the child's whole process group
at the wall-clock limit. Forking from a small idle worker costs ~1 ms where starting an interpreter per
sample cost 20-30 ms of CPU. The outcome is one of ``passed``, ``failed``, ``timeout``, ``memory``.

Not a jail: the child runs as the caller's user and can read and write what that user can outside its
temp dir. Run untrusted code as an unprivileged user, or in a container, for stronger isolation.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import queue
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["Outcome", "network_isolation", "run_program"]

_MEMORY_EXIT = 97  # the child's exit code for a MemoryError
_OUTPUT_LIMIT = 1 << 20  # bytes of stdout/stderr a program may write (RLIMIT_FSIZE)
_SLACK_S = 10.0  # how much longer than a program's limit we wait on the worker itself

# The worker: one JSON request per line on stdin ({dir, timeout, mem, cpu, nonce}), one JSON answer per
# line on stdout ({"code": exit code} or {"timeout": true}). The child prints a sentinel line with the
# nonce after the program, so a program that exits early (os._exit(0)) does not pass.
_WORKER = r"""
import json, os, resource, select, signal, sys, time

def child(req):
    os.setsid()
    os.chdir(req["dir"])
    for fd, name in ((1, ".stdout"), (2, ".stderr")):
        os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.environ["HOME"] = os.environ["TMPDIR"] = req["dir"]
    if req["mem"] > 0:
        resource.setrlimit(resource.RLIMIT_AS, (req["mem"], req["mem"]))
    resource.setrlimit(resource.RLIMIT_CPU, (req["cpu"], req["cpu"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (req["fsize"], req["fsize"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    import socket
    def no_network(*args, **kwargs):
        raise OSError("network access is disabled in the code sandbox")
    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            no_network()
    socket.socket = NoSocket
    for name in ("create_connection", "create_server", "getaddrinfo", "socketpair", "fromfd"):
        setattr(socket, name, no_network)
    nonce = req.pop("nonce")
    with open("program.py", encoding="utf-8") as f:
        source = f.read()
    sys.argv = ["program.py"]
    try:
        exec(compile(source, "program.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except MemoryError:
        sys.stderr.write("MemoryError\n")
        sys.stderr.flush()
        os._exit(MEMORY_EXIT)
    except SystemExit as exc:
        sys.stderr.write("the program called exit(%r) before its tests finished\n" % (exc.code,))
        sys.stderr.flush()
        os._exit(1)
    except BaseException:
        import traceback
        traceback.print_exc(limit=4)
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.write("\n" + nonce + "\n")
    sys.stdout.flush()
    os._exit(0)

def wait(pid, timeout):
    # the exit code (negative: the signal), or None when the child outlived the timeout
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        ready = select.select([fd], [], [], timeout)[0]
        os.close(fd)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) if ready else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.002)
    return None

def kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass

for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            child(req)
        finally:
            os._exit(1)
    code = wait(pid, req["timeout"])
    kill_group(pid)  # the program's leftovers in its group; on a timeout, the program itself
    if code is None:
        os.waitpid(pid, 0)
        answer = {"timeout": True}
    else:
        answer = {"code": code}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
""".replace("MEMORY_EXIT", str(_MEMORY_EXIT))


@dataclass(frozen=True)
class Outcome:
    """How a program ended: ``status`` is passed | failed | timeout | memory; ``detail`` one line."""

    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.lru_cache(maxsize=1)
def network_isolation() -> tuple[str, ...]:
    """The command prefix that gives the workers a network namespace of their own, or ``()`` where this
    machine allows none (then only the socket block applies)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    for prefix in ((unshare, "-n"), (unshare, "-r", "-n")):
        try:
            done = subprocess.run([*prefix, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return prefix
    return ()


class _Worker:
    """One sandbox worker process; used by one thread at a time (the pool hands it out)."""

    def __init__(self, network: bool, site_packages: bool) -> None:
        self.home = tempfile.mkdtemp(prefix="mf-sandbox-")
        flags = ["-I"] if site_packages else ["-I", "-S"]
        prefix = () if network else network_isolation()
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": self.home,
            "TMPDIR": self.home,
            "LANG": "C.UTF-8",
        }
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, *flags, "-c", _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.home,
            env=env,
            text=True,
            close_fds=True,
        )

    def run(self, request: dict[str, Any], wait_s: float) -> dict[str, Any] | None:
        """The worker's answer, or None when it died or did not answer in ``wait_s`` (then it is dead)."""
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(json.dumps(request) + "\n")
            stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            return None
        line = _readline(stdout, wait_s)
        if not line:
            self.close()
            return None
        answer: dict[str, Any] = json.loads(line)
        return answer

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        shutil.rmtree(self.home, ignore_errors=True)


def _readline(stream: IO[str], timeout: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return stream.readline()


class _Pool:
    """Idle workers per (network, site_packages); a thread takes one, or starts one when none is idle."""

    def __init__(self) -> None:
        self._idle: dict[tuple[bool, bool], queue.SimpleQueue[_Worker]] = {}
        self._all: list[_Worker] = []
        self._lock = threading.Lock()

    def take(self, key: tuple[bool, bool]) -> _Worker:
        with self._lock:
            idle = self._idle.setdefault(key, queue.SimpleQueue())
        while True:
            try:
                worker = idle.get_nowait()
            except queue.Empty:
                worker = _Worker(*key)
                with self._lock:
                    self._all.append(worker)
                return worker
            if worker.alive:
                return worker

    def give_back(self, key: tuple[bool, bool], worker: _Worker) -> None:
        if worker.alive:
            self._idle[key].put(worker)

    def close(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
            self._idle.clear()
        for worker in workers:
            worker.close()


_POOL = _Pool()
atexit.register(_POOL.close)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip()[:200] if lines else ""


def run_program(
    source: str,
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 1024,
    network: bool = False,
    site_packages: bool = False,
) -> Outcome:
    """Run ``source`` in a sandboxed child Python and say how it ended (see the module docstring).
    ``site_packages``: the program may import installed packages (numpy, ...), not only the stdlib."""
    nonce = secrets.token_hex(16)
    cpu = max(1, int(timeout_s) + 1)
    key = (network, site_packages)
    with tempfile.TemporaryDirectory(prefix="mf-code-") as tmp:
        work = Path(tmp)
        (work / "program.py").write_text(source, encoding="utf-8")
        request = {
            "dir": tmp,
            "timeout": timeout_s,
            "mem": memory_mb << 20,
            "cpu": cpu,
            "fsize": _OUTPUT_LIMIT,
            "nonce": nonce,
        }
        worker = _POOL.take(key)
        try:
            answer = worker.run(request, timeout_s + _SLACK_S)
        finally:
            _POOL.give_back(key, worker)
        if answer is None:
            return Outcome("failed", "the sandbox worker died")
        if answer.get("timeout"):
            return Outcome("timeout", f"still running after {timeout_s:g} s")
        code = int(answer["code"])
        stderr = _tail(work / ".stderr")
        if code == _MEMORY_EXIT or (code != 0 and "MemoryError" in stderr):
            return Outcome("memory", f"over the {memory_mb} MB memory limit")
        if code in (-signal.SIGXCPU, -signal.SIGKILL) and "Traceback" not in stderr:
            return Outcome("timeout", f"over the CPU-time limit ({cpu} s)")
        if code == 0 and _tail(work / ".stdout", 200).rstrip().endswith(nonce):
            return Outcome("passed")
        if code == 0:
            return Outcome("failed", "the program exited before its tests finished")
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return Outcome("failed", f"killed by signal {name}")
        return Outcome("failed", _last_line(stderr) or f"exit code {code}")
