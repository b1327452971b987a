"""One run per output dir: a second run into a dir another live process holds fails at once (exit 2),
names the holder and touches nothing there; a holder killed with SIGKILL leaves no stale lock."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelfactory import CallableModel
from modelfactory._runlock import LOCK_FILE, dir_lock
from modelfactory.errors import ConfigError
from modelfactory.job import app
from modelfactory.job.runner import run_items
from tests.job.test_app import app_config, run_app, write_items

HOLD = (
    "import sys\n"
    "from modelfactory._runlock import dir_lock\n"
    "with dir_lock(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another live process holding ``tmp_path / 'run'``'s lock (until killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "run")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_run_job_into_a_held_dir_exits_2_names_the_holder_and_writes_nothing(
    tmp_path: Path, holder: subprocess.Popen[str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    earlier = '{"runs": 1, "note": "the live run\'s record"}\n'
    (run_dir / "job.json").write_text(earlier)
    data = write_items(tmp_path / "items.jsonl", ["one", "two"])
    cfg = app_config("model=custom_callable", "task=dataset", f"task.path={data}", "runner.progress=false")

    assert app.run_job(cfg, run_dir) == 2
    err = capsys.readouterr().err
    assert f"pid {holder.pid} on host {socket.gethostname()}" in err and "in use by another run" in err
    assert (run_dir / "job.json").read_text() == earlier  # the live run's record left alone
    assert not (run_dir / "results.jsonl").exists()
    with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
        app.run_job(cfg, run_dir, raise_errors=True)

    os.kill(holder.pid, signal.SIGKILL)  # the OS drops the lock with the process: no stale lock
    holder.wait()
    assert app.run_job(cfg, run_dir) == 0
    assert len((run_dir / "results.jsonl").read_text().splitlines()) == 2
    assert json.loads((run_dir / "job.json").read_text())["runs"] == 2


def test_run_items_into_a_held_dir_raises_before_any_call(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    calls: list[object] = []
    model = CallableModel(fn=lambda messages, **kw: calls.append(messages) or "x")
    with pytest.raises(ConfigError, match="results_path") as err:
        run_items(model, [{"id": "a", "prompt": "hi"}], results_path=tmp_path / "run" / "rows.jsonl")
    assert f"pid {holder.pid}" in str(err.value) and calls == []
    assert not (tmp_path / "run" / "rows.jsonl").exists()


def test_the_cli_exits_2_on_a_held_dir(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    proc = run_app(tmp_path / "run", "model=custom_callable", "prompt=hi")
    assert proc.returncode == 2, proc.stderr
    assert f"pid {holder.pid}" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "result.json").exists()


def test_the_lock_is_reentrant_in_one_process_and_free_after(tmp_path: Path) -> None:
    with dir_lock(tmp_path), dir_lock(tmp_path):  # the app holds it, then the runner takes it again
        info = json.loads((tmp_path / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released: no holder recorded
    proc = subprocess.run(
        [sys.executable, "-c", HOLD, str(tmp_path)], input="", capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "held", proc.stderr
