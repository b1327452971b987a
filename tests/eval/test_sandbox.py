"""The code sandbox: a child process with time, memory, output and network limits and its own temp dir."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from modelfactory.eval.sandbox import network_isolation, run_program


def test_a_passing_and_a_failing_program() -> None:
    assert run_program("assert 1 + 1 == 2\n").status == "passed"
    failed = run_program("assert 1 + 1 == 3, 'arithmetic'\n")
    assert failed.status == "failed" and "AssertionError: arithmetic" in failed.detail


def test_a_hang_is_a_timeout_and_its_children_die_with_it(tmp_path: os.PathLike[str]) -> None:
    pid_file = os.path.join(str(tmp_path), "grandchild.pid")
    program = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({pid_file!r}, 'w').write(str(child.pid))\n"
        "while True: pass\n"
    )
    outcome = run_program(program, timeout_s=1.0)
    assert outcome.status == "timeout"
    with open(pid_file) as f:  # the grandchild was started before the timeout
        pid = int(f.read())
    # It dies with the program: gone, or a zombie waiting for init (it sleeps 120 s if it survived). Polled
    # rather than a fixed 3.5 s sleep waiting to see whether a marker file appears.
    deadline = time.monotonic() + 30
    while _alive(pid):
        assert time.monotonic() < deadline, f"the grandchild {pid} outlived the sandbox's timeout"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_memory_blowup_is_memory() -> None:
    outcome = run_program("x = bytearray(2 * 1024**3)\n", memory_mb=256)
    assert outcome.status == "memory" and "256 MB" in outcome.detail


def test_early_exit_does_not_pass() -> None:
    assert run_program("import os\nos._exit(0)\nassert False\n").status == "failed"
    assert run_program("import sys\nsys.exit(0)\nassert False\n").status == "failed"


def test_runs_in_a_temp_dir_without_our_environment() -> None:
    os.environ["MF_SANDBOX_SECRET"] = "leak"
    try:
        program = (
            "import os\n"
            "assert os.path.basename(os.getcwd()).startswith('mf-code-'), os.getcwd()\n"
            "assert 'MF_SANDBOX_SECRET' not in os.environ\n"
            "assert not any('proxy' in k.lower() for k in os.environ)\n"
            "open('scratch.txt', 'w').write('x')\n"
        )
        assert run_program(program).status == "passed"
    finally:
        del os.environ["MF_SANDBOX_SECRET"]


def test_socket_module_is_disabled() -> None:
    outcome = run_program("import socket\nsocket.socket()\n")
    assert outcome.status == "failed" and "network access is disabled" in outcome.detail


@pytest.mark.skipif(not network_isolation(), reason="no network namespace on this machine (unshare -n)")
def test_no_network_even_below_the_socket_module() -> None:
    """A program using the C-level ``_socket`` (past the Python-level block) still reaches nothing: a
    server listening on 127.0.0.1 here is not reachable from the child's own network namespace."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[object] = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True)
    thread.start()
    program = f"import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\n"
    outcome = run_program(program, timeout_s=5)
    server.close()
    assert outcome.status == "failed" and "Error" in outcome.detail
    assert not accepted
    # the same program with the network namespace off does connect: the test can tell the difference
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    program = f"import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\n"
    assert run_program(program, network=True).status == "passed"
    server.close()


def test_output_is_capped() -> None:
    outcome = run_program("import sys\nwhile True: sys.stdout.write('x' * 65536)\n", timeout_s=10)
    # CPython ignores SIGXFSZ: past RLIMIT_FSIZE a write raises instead of killing the process
    assert outcome.status == "failed" and "File too large" in outcome.detail


def test_installed_packages_only_when_asked() -> None:
    program = "import jsonschema\n"  # installed in this venv (the eval extra), not in the stdlib
    assert run_program(program).status == "failed"
    assert run_program(program, site_packages=True).status == "passed"


def test_a_worker_serves_many_programs_and_one_killed_is_replaced() -> None:
    from modelfactory.eval import sandbox

    assert [run_program(f"assert {i} == {i}\n").status for i in range(5)] == ["passed"] * 5
    for worker in list(sandbox._POOL._all):
        worker.proc.kill()  # a worker that died between programs
        worker.proc.wait()
    assert run_program("assert True\n").status == "passed"
