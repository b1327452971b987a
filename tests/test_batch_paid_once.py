"""runner.provider_batch pays once: a run killed at any step of a batch submission, then resumed into the
same dir, submits every item at most once (one batch at the provider, each custom_id in it once).

The killed run is a real process of its own (tests/batch_job.py, forked from a forkserver that imported
modelfactory and the openai SDK once); the resume runs the same job in the test's process (a resume
starts from the results file and ``batches.json``, whatever process runs it). The process dies either by ``kill -9`` from the fake provider while the upload or
create reply is in flight (the request done at the provider, the reply lost), or by the driver's own
crash hook (``MODELFACTORY_BATCH_CRASH_AT``: ``os._exit`` at that step of the real code path).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import signal
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelfactory.batch import BatchState
from tests.batch_job import PRELOAD, N, killed_run, run_job
from tests.servers.anthropic_batches import AnthropicBatchServer
from tests.servers.openai_batches import BatchAPIServer

pytestmark = pytest.mark.server


# step -> where the kill comes from: "server" (on that request, before its reply) or the crash hook
STEPS: dict[str, list[str]] = {
    "openai": [
        "before_submit",
        "during_upload",
        "after_upload",
        "after_upload_record",
        "during_create",
        "after_create",
        "after_record",
    ],
    "anthropic": ["before_submit", "during_create", "after_create", "after_record"],
}
CASES = [(provider, step) for provider, steps in STEPS.items() for step in steps]


FORKS = multiprocessing.get_context("forkserver")
FORKS.set_forkserver_preload(PRELOAD)


def _worker(provider: str, url: str, out: Path, crash_at: str | None) -> BaseProcess:
    """The run that dies: a process of its own, forked from a server that imported everything once."""
    proc = FORKS.Process(target=killed_run, args=(provider, url, str(out), crash_at, str(_log(out))))
    proc.start()
    return proc


def _log(out: Path) -> Path:
    return out.with_name("killed-run.log")


def _killer(procs: list[BaseProcess]) -> Callable[[], None]:
    """A server hook: SIGKILL the client whose request this is, and wait for it to be gone, before the
    reply goes out. Waited on with a pidfd: reading its exit status is the test's own (join)."""

    def kill() -> None:
        pid = procs[0].pid
        assert pid is not None
        fd = os.pidfd_open(pid)
        try:
            os.kill(pid, signal.SIGKILL)
            select.select([fd], [], [], 30)
        finally:
            os.close(fd)

    return kill


def _other_job_batch(provider: str, server: Any) -> None:
    """Another job of the account (a sweep's previous job) already has a batch of the same size: a resume
    must not take it for its own."""
    lines = [{"custom_id": f"other{i}", "text": f"question {i}"} for i in range(N)]
    if provider == "openai":
        auth = {"authorization": "Bearer sk-fake"}
        data = "".join(
            json.dumps({"custom_id": x["custom_id"], "method": "POST", "url": "/v1/chat/completions",
                        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": x["text"]}]}})
            + "\n"
            for x in lines
        )  # fmt: skip
        up = httpx.post(f"{server.url}/v1/files", headers=auth, data={"purpose": "batch"},
                        files={"file": ("other.jsonl", data.encode())})  # fmt: skip
        body = {"input_file_id": up.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h",
                "metadata": {"created_by": "modelfactory", "modelfactory_token": "someone-else"}}  # fmt: skip
        assert httpx.post(f"{server.url}/v1/batches", headers=auth, json=body).status_code == 200
        server.uploads = 0
    else:
        reqs = [{"custom_id": x["custom_id"], "params": {"model": "claude-test", "max_tokens": 8,
                 "messages": [{"role": "user", "content": x["text"]}]}} for x in lines]  # fmt: skip
        headers = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
        resp = httpx.post(f"{server.url}/v1/messages/batches", headers=headers, json={"requests": reqs})
        assert resp.status_code == 200


def _submitted_ids(provider: str, server: Any) -> list[str]:
    """Every custom_id of every batch the provider created, as often as it was submitted (but the
    other job's)."""
    if provider == "openai":
        ids = [line["custom_id"] for b in server.batches.values() for line in b.lines]
    else:
        ids = [r["custom_id"] for body in server.bodies for r in body["requests"]]
    return [i for i in ids if not i.startswith("other")]


@pytest.mark.parametrize(("provider", "step"), CASES, ids=[f"{p}-{s}" for p, s in CASES])
def test_a_kill_at_any_step_then_a_resume_submits_each_item_once(
    tmp_path: Path, provider: str, step: str
) -> None:
    server: Any = BatchAPIServer() if provider == "openai" else AnthropicBatchServer()
    out = tmp_path / "results.jsonl"
    procs: list[BaseProcess] = []
    with server:
        _other_job_batch(provider, server)
        if step.startswith("during_"):  # killed by the provider's side, the request done, the reply lost
            setattr(server, "on_upload" if step == "during_upload" else "on_create", _killer(procs))
        procs.append(_worker(provider, server.url, out, None if step.startswith("during_") else step))
        procs[0].join(120)
        assert procs[0].exitcode in (-signal.SIGKILL, 137), _log(out).read_text()
        server.on_create = None
        if provider == "openai":
            server.on_upload = None
        assert not out.exists() or out.read_text() == ""  # nothing collected before the kill

        stats = run_job(provider, server.url, out)  # the resume, in this process: a new run into the dir
        assert (stats.ok, stats.failed, stats.skipped) == (N, 0, 0)

        submitted = _submitted_ids(provider, server)
        assert sorted(submitted) == sorted(f"q{i}" for i in range(N))  # every item once: one batch
        assert server.submissions == 2  # the other job's and this run's, once
        if provider == "openai":
            # an upload is used again, found by its name when its id was not recorded
            assert server.uploads == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(f"q{i}" for i in range(N))
    assert all(r["error"] is None and r["batch"] is True for r in rows)
    (rec,) = BatchState.load(tmp_path / "batches.json").batches
    assert rec.collected and rec.token and rec.id is not None


def test_a_corrupt_batches_json_stops_the_run_before_anything_is_submitted(tmp_path: Path) -> None:
    from modelfactory import LiteLLMModel
    from modelfactory.batch import BatchOptions
    from modelfactory.errors import DataError
    from modelfactory.job.runner import run_items

    (tmp_path / "batches.json").write_text('{"version": 1, "batches": [{"provider": "anthropic"')  # torn
    with AnthropicBatchServer() as server:
        model = LiteLLMModel(model_id="anthropic/claude-test", api_base=server.url, api_key="test-key")
        items = [{"id": "q0", "prompt": "hi"}]
        with pytest.raises(DataError, match="batches.json is unreadable"):
            run_items(
                model, items, results_path=tmp_path / "r.jsonl", provider_batch=BatchOptions(poll_s=0.05)
            )
        assert server.submissions == 0


def test_a_submission_left_unrecorded_is_reported_as_one_the_next_run_looks_up(tmp_path: Path) -> None:
    from modelfactory.batch import BatchRecord, interrupted_note
    from modelfactory.batch.manage import list_batches

    state = BatchState(tmp_path / "batches.json", [BatchRecord("openai", "m", {"q0": "q0"}, token="t" * 32)])
    state.save()  # what a run killed between recording its submission and the batch id leaves
    note = interrupted_note(tmp_path / "results.jsonl")
    assert note is not None and "looks the batch up at the provider before submitting" in note
    (line,) = list_batches(tmp_path, query=False)
    assert "no batch id recorded: the next run into this dir looks it up" in line
