"""A multirun in batch mode submits every job's batches before it waits for any (modelfactory/batch/sweep.py),
under the basic and joblib launchers, against a local OpenAI Batch API that records the order of
submissions and completions; a sweep killed while waiting resumes without a second submission."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelfactory.batch import BatchGroup, BatchProgress, BatchRecord, BatchState, wait_all
from modelfactory.batch.sweep import submitted_jobs, sweep_collects
from tests.servers.openai_batches import BatchAPIServer

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURES = "0,0.5,1.0"  # three jobs


@pytest.fixture
def provider() -> Iterator[BatchAPIServer]:
    # local_server sends the placeholder key "EMPTY" to a base URL the config names (never a real key)
    with BatchAPIServer(api_key="EMPTY") as server:
        yield server


def _env() -> dict[str, str]:
    """What a user's shell has: no PYTHONPATH (run.py must find the project by itself)."""
    return {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "PYTHONPATH")}


def _sweep_cmd(sweep_dir: Path, url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        "model=local_server",
        f"model.api_base={url}/v1",
        "model.model_id=echo",
        "task=dataset",
        "task.limit=3",
        "runner.provider_batch.enabled=true",
        "runner.provider_batch.poll_s=0.05",
        "runner.progress=false",
        f"generation.temperature={TEMPERATURES}",
        *extra,
    ]


def _order_ok(events: list[tuple[str, str]], jobs: int) -> None:
    kinds = [kind for kind, _ in events]
    assert kinds.count("submit") == jobs, events
    first_end = kinds.index("end")
    assert kinds[:first_end] == ["submit"] * jobs, events  # every submission before any batch ended


def _summary(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _check_jobs(sweep_dir: Path, collected: tuple[int, ...] = (0, 1, 2)) -> None:
    """Every job finished; the ``collected`` ones by the sweep's callback (the wait in their time)."""
    for n in range(3):
        rows = [json.loads(x) for x in (sweep_dir / str(n) / "results.jsonl").read_text().splitlines()]
        assert [r["error"] for r in rows] == [None] * 3
        assert all(r["batch"] is True and r["content"].startswith("echo: ") for r in rows)
        job = json.loads((sweep_dir / str(n) / "job.json").read_text())
        assert job["error"] is None and job["exit_code"] == 0 and job.get("status") != "submitted"
        if n in collected:
            assert isinstance(job["batch_wait_s"], float)  # the sweep's wait, counted in elapsed_s
    assert [(r["ok"], r["failed"], r["error"]) for r in _summary(sweep_dir)] == [("3", "0", "")] * 3
    assert submitted_jobs(sweep_dir) == []


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize(
    "launcher",
    [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
    ids=["basic", "joblib"],
)
def test_a_multirun_submits_every_batch_before_waiting(
    tmp_path: Path, provider: BatchAPIServer, launcher: list[str]
) -> None:
    # A batch ends at its first status poll: a job that waited for its own batch before the next job
    # submitted would show an "end" before the last "submit". With joblib's 2 workers for 3 jobs, the
    # third job starts only when one of the first two has returned.
    proc = subprocess.run(
        _sweep_cmd(tmp_path, provider.url, *launcher),
        cwd=tmp_path,  # not the project dir: run.py finds its own modules
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    _order_ok(provider.events, 3)
    assert "waiting for all of them" in proc.stderr
    _check_jobs(tmp_path)
    bodies = {line["body"]["temperature"] for line in provider.lines}
    assert bodies == {0.0, 0.5, 1.0}  # each job's own generation settings went into its batch


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["crash", "ctrl-c"])
def test_a_sweep_killed_while_waiting_resumes_without_a_second_submission(
    tmp_path: Path, provider: BatchAPIServer, sig: signal.Signals
) -> None:
    provider.hold.clear()  # the batches stay in_progress
    cmd = _sweep_cmd(tmp_path, provider.url)
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 240  # a hang guard, not a measurement
        while provider.submissions < 3 or not any(c.method == "GET" for c in provider.requests[-1:]):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        assert sorted(d.name for d in submitted_jobs(tmp_path)) == ["0", "1", "2"]
        proc.send_signal(sig)  # SIGKILL: the sweep dies while it waits, no clean-up at all; SIGINT: Ctrl-C
        _, stderr = proc.communicate(timeout=60)
        if sig == signal.SIGINT:
            assert proc.returncode == 130, stderr
            assert "keep running at the provider" in stderr and "modelfactory batches cancel" in stderr
            assert f"{tmp_path / '0'}" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
    provider.hold.set()

    # One job re-run into its own dir (a single run) collects its batch alone ...
    job0 = tmp_path / "0"
    single = [
        a
        for a in cmd
        if a not in ("-m",) and not a.startswith(("hydra.sweep.dir=", "generation.temperature="))
    ]
    single += [f"hydra.run.dir={job0}", "generation.temperature=0"]
    done = subprocess.run(single, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert provider.submissions == 3 and submitted_jobs(tmp_path) != []
    # ... and the whole sweep re-run into the same dir collects the other two: nothing is submitted again.
    again = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert provider.submissions == 3
    _check_jobs(tmp_path, collected=(1, 2))


@pytest.mark.slow
@pytest.mark.server
def test_the_collecting_run_continues_each_jobs_tracker_run(
    tmp_path: Path, provider: BatchAPIServer, mlflow_template: Path
) -> None:
    """The sweep's other callbacks see the collecting run as a job's second run: MLflow's job runs get
    the submit phase's metrics at step 1 and the collected ones at step 2, in the same run."""
    from tests.test_tracking import _mlflow_runs, mlflow_store

    db = mlflow_store(mlflow_template, tmp_path / "mlruns.db")  # migrated already: the sweep is the test
    cmd = _sweep_cmd(tmp_path / "sweep", provider.url, "tracking=mlflow", f"tracking.uri=sqlite:///{db}")
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "item/s" not in proc.stderr  # runner.progress=false: no bar while the sweep waits either
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    jobs = [r for r in _mlflow_runs(db) if r.info.run_name.startswith("job ")]
    assert len(jobs) == 3
    for run in jobs:
        history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "ok")]
        assert history == [(1, 0.0), (2, 3.0)] and run.info.status == "FINISHED"


def test_sweep_collects_only_with_the_callback() -> None:
    target = {"_target_": "modelfactory.batch.sweep.BatchSweepCallback"}
    summary = {"_target_": "modelfactory.hydra_callbacks.SummaryCallback"}
    assert sweep_collects({"summary": summary, "batch": target}) is True
    assert sweep_collects({"summary": summary}) is False
    assert sweep_collects(None) is False


# --------------------------------------------------------------------------- wait_all, in process


class _Adapter:
    """Batches that end after a number of polls; a poll of a 'flaky' batch fails."""

    provider = "fake"
    max_requests = 10
    max_bytes = 1 << 20

    def __init__(self, polls_to_end: dict[str, int], flaky: tuple[str, ...] = ()) -> None:
        self.left = dict(polls_to_end)
        self.flaky = flaky
        self.polled: list[str] = []

    def progress(self, batch_id: str) -> BatchProgress:
        self.polled.append(batch_id)
        if batch_id in self.flaky:
            raise ConnectionError("network blip")
        self.left[batch_id] -= 1
        ended = self.left[batch_id] <= 0
        return BatchProgress(ended, "completed" if ended else "in_progress", 2, 2 if ended else 0, 0)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"wait_all must only poll, not call {name}")


def _group(name: str, adapter: Any, ids: list[str], max_wait: float | None = None) -> BatchGroup:
    state = BatchState(None, [BatchRecord("fake", "m", {"a": "a", "b": "b"}, id=i) for i in ids])
    return BatchGroup(name, adapter, state, max_wait)


def test_wait_all_polls_every_job_each_round_until_all_end() -> None:
    slept: list[float] = []
    a = _Adapter({"a1": 1, "a2": 3})
    b = _Adapter({"b1": 2})
    waited = wait_all(
        [_group("job-a", a, ["a1", "a2"]), _group("job-b", b, ["b1"])],
        1.0,
        progress=False,
        sleep=slept.append,
    )
    assert a.polled == ["a1", "a2", "a2", "a2"] and b.polled == ["b1", "b1"]
    assert slept == [1.0, 1.5]  # two rounds of waiting, backing off x1.5
    assert set(waited) == {"job-a", "job-b"}


def test_wait_all_stops_at_a_jobs_max_wait_and_after_failing_polls() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    slow = _Adapter({"s1": 100})
    flaky = _Adapter({"f1": 1}, flaky=("f1",))
    waited = wait_all(
        [_group("slow", slow, ["s1"], max_wait=2.0), _group("flaky", flaky, ["f1"])],
        1.0,
        progress=False,
        sleep=sleep,
        clock=lambda: now[0],
    )
    assert waited["slow"] > 2.0 and len(slow.polled) < 100  # left running past its max_wait
    assert len(flaky.polled) == 5  # MAX_POLL_FAILURES in a row, then no longer waited for
