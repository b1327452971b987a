"""Run untrusted Python (a model's code and its tests) in a child process, never in the caller's.

Each program gets a fresh temp dir (its cwd and HOME), a wall-clock limit (the process group is
killed), an address-space and CPU-time limit (``resource.setrlimit`` in the child, before the program
runs), a capped output size, an environment without proxies or ``PYTHON*`` variables (``python -I``), the
socket module disabled, and, where ``unshare -n`` works (root, or user namespaces), a network namespace
with no interface at all. The outcome is one of ``passed``, ``failed``, ``timeout``, ``memory``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Outcome", "network_isolation", "run_program"]

_MEMORY_EXIT = 97  # the child's exit code for a MemoryError
_OUTPUT_LIMIT = 1 << 20  # bytes of stdout/stderr a program may write (RLIMIT_FSIZE)

# Runs in the child before the program: limits, no sockets, then the program, then a sentinel line with
# a nonce read from stdin, so a program that exits early (os._exit(0)) does not pass.
_BOOTSTRAP = r"""
import os, resource, sys
def _main():
    nonce = sys.stdin.readline().strip()
    mem, cpu, fsize = (int(a) for a in sys.argv[1:4])
    if mem > 0:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    import socket
    def _no_network(*args, **kwargs):
        raise OSError("network access is disabled in the code sandbox")
    class _NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            _no_network()
    socket.socket = _NoSocket
    for name in ("create_connection", "create_server", "getaddrinfo", "socketpair", "fromfd"):
        setattr(socket, name, _no_network)
    with open("program.py", encoding="utf-8") as f:
        source = f.read()
    sys.argv = ["program.py"]
    try:
        exec(compile(source, "program.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except MemoryError:
        sys.stderr.write("MemoryError\n")
        os._exit(MEMORY_EXIT)
    except SystemExit as exc:
        sys.stderr.write("the program called exit(%r) before its tests finished\n" % (exc.code,))
        os._exit(1)
    except BaseException:
        import traceback
        traceback.print_exc(limit=4)
        os._exit(1)
    sys.stdout.flush()
    sys.stdout.write("\n" + nonce + "\n")
    sys.stdout.flush()
    os._exit(0)
_main()
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
    """The command prefix that gives the child a network namespace of its own, or ``()`` where this
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


def _env(home: str) -> dict[str, str]:
    # no proxies, no credentials, no PYTHONPATH: only what an interpreter needs
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}


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
    source: str, *, timeout_s: float = 5.0, memory_mb: int = 1024, network: bool = False
) -> Outcome:
    """Run ``source`` in a sandboxed child Python and say how it ended (see the module docstring)."""
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="mf-code-") as tmp:
        work = Path(tmp)
        (work / "program.py").write_text(source, encoding="utf-8")
        out_path, err_path = work / ".stdout", work / ".stderr"
        cpu = max(1, int(timeout_s) + 1)
        args = [sys.executable, "-I", "-c", _BOOTSTRAP, str(memory_mb << 20), str(cpu), str(_OUTPUT_LIMIT)]
        prefix = () if network else network_isolation()
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                [*prefix, *args],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                cwd=tmp,
                env=_env(tmp),
                start_new_session=True,  # its own process group: a timeout kills whatever it spawned
                close_fds=True,
            )
            try:
                assert proc.stdin is not None
                proc.stdin.write(nonce.encode() + b"\n")
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return Outcome("timeout", f"still running after {timeout_s:g} s")
            _kill_group(proc)  # anything it left behind in its group
        stderr = _tail(err_path)
        if code == _MEMORY_EXIT or (code != 0 and "MemoryError" in stderr):
            return Outcome("memory", f"over the {memory_mb} MB memory limit")
        if code in (-signal.SIGXCPU, -signal.SIGKILL) and "Traceback" not in stderr:
            return Outcome("timeout", f"over the CPU-time limit ({cpu} s)")
        if code == 0 and _tail(out_path, 200).rstrip().endswith(nonce):
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


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
