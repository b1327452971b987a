"""runner.provider_batch end to end: `modelfactory serve` as the OpenAI Batch provider (driven by the openai
SDK's own client.files / client.batches), a local Anthropic Message Batches server, and run.py killed
between submission and completion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelfactory import CallableModel, LiteLLMModel, OpenAIServerModel, cli
from modelfactory.batch import BatchOptions, BatchState
from modelfactory.errors import ConfigError
from modelfactory.job.runner import run_items
from modelfactory.messages import ChatMessage, TokenUsage
from modelfactory.serve import BackgroundServer, ServerSettings
from tests.servers.anthropic_batches import AnthropicBatchServer

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
FAST = BatchOptions(poll_s=0.05)
ITEMS = [{"id": f"q{i}", "prompt": f"question {i} | tail"} for i in range(7)] + [
    {
        "id": "with space",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    }
]


def echo(
    messages: list[dict[str, Any]], stop_sequences: list[str] | None = None, **kwargs: Any
) -> ChatMessage:
    """A deterministic model: the reply (stops are the caller's to apply) with usage in words."""
    text = "echo: " + str(messages[-1]["content"])
    words = sum(len(str(m["content"]).split()) for m in messages)
    return ChatMessage(role="assistant", content=text, token_usage=TokenUsage(words, len(text.split())))


@pytest.fixture(scope="module")
def served() -> Iterator[BackgroundServer]:
    srv = BackgroundServer(
        CallableModel(fn=echo, model_id="echo"), ServerSettings(port=0, log_level="warning")
    )
    with srv:  # started, and stopped after the module
        yield srv


def client_of(srv: BackgroundServer, **kw: Any) -> OpenAIServerModel:
    return OpenAIServerModel(model_id="echo", api_base=f"{srv.url}/v1", max_retries=0, **kw)


def rows(path: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        out[row["id"]] = row
    return out


def same_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "content", "usage", "error")}


# --------------------------------------------------------------------------- serve, via the openai SDK


def test_serve_speaks_files_and_batches_to_the_openai_sdk(served: BackgroundServer) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused")
    lines = [
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "echo", "messages": [{"role": "user", "content": "one two"}], "stop": [" two"]},
        },
        {
            "custom_id": "b",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]},
        },
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
    assert client.files.retrieve(uploaded.id).bytes == len(data)
    assert client.files.content(uploaded.id).content == data
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    for _ in range(200):
        batch = client.batches.retrieve(batch.id)
        if batch.status == "completed":
            break
        time.sleep(0.05)
    assert batch.status == "completed"
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        2,
        1,
        1,
    )
    (ok,) = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert ok["custom_id"] == "a" and ok["response"]["status_code"] == 200
    assert ok["response"]["body"]["choices"][0]["message"]["content"] == "echo: one"  # the server trims stops
    (bad,) = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
    assert bad["custom_id"] == "b" and bad["response"]["status_code"] == 404
    assert batch.id in [b.id for b in client.batches.list()]
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_batch_rows_equal_online_rows_and_fill_the_cache(served: BackgroundServer, tmp_path: Path) -> None:
    cache = {"mode": "read_write", "path": str(tmp_path / "cache.sqlite")}
    gen = {"stop_sequences": [" |"], "progress": False}
    before = served.app.state.serve.batches.created
    stats = run_items(
        client_of(served, cache=cache),
        ITEMS,
        results_path=tmp_path / "b" / "results.jsonl",
        provider_batch=BatchOptions(poll_s=0.05, max_requests=3),
        **gen,
    )
    assert (stats.ok, stats.failed, stats.mode) == (len(ITEMS), 0, "provider_batch")
    assert served.app.state.serve.batches.created - before == 3  # 8 items split at 3 per batch
    online = run_items(client_of(served), ITEMS, results_path=tmp_path / "o" / "results.jsonl", **gen)
    assert online.ok == len(ITEMS)
    batch_rows, online_rows = rows(tmp_path / "b" / "results.jsonl"), rows(tmp_path / "o" / "results.jsonl")
    assert [same_fields(r) for r in batch_rows.values()] == [same_fields(online_rows[i]) for i in batch_rows]
    assert (
        batch_rows["q1"]["content"] == "echo: question 1" and batch_rows["q1"]["usage"]["output_tokens"] == 5
    )
    assert all(r["batch"] is True and r["batch_id"].startswith("batch_") for r in batch_rows.values())
    assert "batch" not in online_rows["q1"]
    # cache.mode=replay (a miss is an error, never a request): every item answered from what the batch stored
    replay = run_items(
        client_of(served, cache={**cache, "mode": "replay"}),
        ITEMS,
        results_path=tmp_path / "r" / "results.jsonl",
        **gen,
    )
    assert replay.ok == len(ITEMS)
    assert [r["content"] for r in rows(tmp_path / "r" / "results.jsonl").values()] == [
        r["content"] for r in batch_rows.values()
    ]
    # and a batch run over a warm cache submits nothing
    before = served.app.state.serve.batches.created
    again = run_items(
        client_of(served, cache=cache),
        ITEMS,
        results_path=tmp_path / "c" / "results.jsonl",
        provider_batch=FAST,
        **gen,
    )
    assert again.ok == len(ITEMS) and served.app.state.serve.batches.created == before


def test_items_a_batch_did_not_answer_go_online_or_stay_errors(tmp_path: Path) -> None:
    calls: dict[str, int] = {}

    def flaky(messages: list[dict[str, Any]], **kw: Any) -> str:
        text = str(messages[-1]["content"])
        calls[text] = calls.get(text, 0) + 1
        if text == "question 2 | tail" and calls[text] == 1:
            raise ConnectionError("the first try of q2 fails")  # retryable: a 5xx line in the error file
        return "echo: " + text

    with BackgroundServer(
        CallableModel(fn=flaky, model_id="echo", retry={"max_attempts": 1}),
        ServerSettings(port=0, log_level="warning"),
    ) as url:
        model = OpenAIServerModel(
            model_id="echo", api_base=f"{url}/v1", max_retries=0, retry={"max_attempts": 1}
        )
        stats = run_items(
            model,
            ITEMS[:4],
            results_path=tmp_path / "a" / "results.jsonl",
            provider_batch=FAST,
            progress=False,
        )
        got = rows(tmp_path / "a" / "results.jsonl")
        assert stats.ok == 4 and got["q2"]["content"] == "echo: question 2 | tail"
        assert "batch" not in got["q2"] and got["q1"]["batch"] is True  # q2 was answered online
        calls.clear()
        stats = run_items(
            model,
            ITEMS[:4],
            results_path=tmp_path / "e" / "results.jsonl",
            provider_batch=BatchOptions(poll_s=0.05, on_missing="error"),
            progress=False,
        )
        got = rows(tmp_path / "e" / "results.jsonl")
        assert (stats.ok, stats.failed) == (3, 1) and got["q2"]["error"][
            "status"
        ] == 502  # a CallableModel is no local model: an upstream error


def test_a_model_without_a_batch_endpoint_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="runner.provider_batch.enabled"):
        run_items(CallableModel(fn=echo), ITEMS, provider_batch=BatchOptions(), progress=False)


# --------------------------------------------------------------------------- Anthropic


def claude(server: AnthropicBatchServer) -> LiteLLMModel:
    return LiteLLMModel(
        model_id="anthropic/claude-test", api_base=server.url, api_key=server.api_key, max_tokens=64
    )


def test_anthropic_message_batches(tmp_path: Path) -> None:
    with AnthropicBatchServer() as server:
        server.outcomes = {"q3": "expired", "q4": "errored"}
        stats = run_items(
            claude(server),
            ITEMS,
            results_path=tmp_path / "results.jsonl",
            provider_batch=BatchOptions(poll_s=0.05, on_missing="error"),
            stop_sequences=[" |"],
            temperature=0,
            progress=False,
        )
        assert server.submissions == 1 and (stats.ok, stats.failed) == (6, 2)
        (body,) = server.bodies
        sent = {r["custom_id"]: r["params"] for r in body["requests"]}
        assert sent["q1"] == {
            "model": "claude-test",
            "max_tokens": 64,
            "temperature": 0,
            "stop_sequences": [" |"],
            "messages": [{"role": "user", "content": "question 1 | tail"}],
        }
        spaced = [p for cid, p in sent.items() if cid.startswith("h-")]  # "with space" is no valid custom_id
        assert spaced and spaced[0]["system"] == "Be brief."
        got = rows(tmp_path / "results.jsonl")
        assert got["q1"]["content"] == "echo: question 1"  # cut before the stop by the provider
        assert (got["q1"]["usage"]["input_tokens"], got["q1"]["usage"]["output_tokens"]) == (4, 3)
        assert got["with space"]["content"] == "echo: hi"
        assert "the batch ended without a result for this item" in got["q3"]["error"]["message"]  # expired
        assert got["q4"]["error"]["message"].endswith("failed: invalid_request_error: bad request")
        # a re-run retries the two error rows in a new batch, and nothing else
        server.outcomes = {}
        stats = run_items(
            claude(server),
            ITEMS,
            results_path=tmp_path / "results.jsonl",
            provider_batch=FAST,
            stop_sequences=[" |"],
            temperature=0,
            progress=False,
        )
        assert server.submissions == 2 and (stats.skipped, stats.ok) == (6, 2)
        assert sorted(r["custom_id"] for r in server.bodies[1]["requests"]) == ["q3", "q4"]


def test_max_wait_leaves_the_batch_running_and_a_rerun_collects_it(tmp_path: Path) -> None:
    with AnthropicBatchServer() as server:
        server.hold.clear()
        stats = run_items(
            claude(server),
            ITEMS[:3],
            results_path=tmp_path / "results.jsonl",
            provider_batch=BatchOptions(poll_s=0.05, max_wait=0.2),
            progress=False,
        )
        assert stats.failed == 3
        assert "max_wait" in rows(tmp_path / "results.jsonl")["q0"]["error"]["message"]
        server.hold.set()
        stats = run_items(
            claude(server),
            ITEMS[:3],
            results_path=tmp_path / "results.jsonl",
            provider_batch=FAST,
            progress=False,
        )
        assert stats.ok == 3 and server.submissions == 1
        assert BatchState.load(tmp_path / "batches.json").running() == []


def test_batches_cancel_stops_a_running_batch_and_a_rerun_submits_anew(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with AnthropicBatchServer() as server:
        server.hold.clear()
        (tmp_path / ".hydra").mkdir()
        (tmp_path / ".hydra" / "config.yaml").write_text(
            "model:\n  _target_: modelfactory.LiteLLMModel\n  model_id: anthropic/claude-test\n"
            f"  api_base: {server.url}\n  api_key: {server.api_key}\n"
        )
        run_items(
            claude(server),
            ITEMS[:2],
            results_path=tmp_path / "results.jsonl",
            provider_batch=BatchOptions(poll_s=0.05, max_wait=0.1),
            progress=False,
        )
        assert cli.main(["batches", "list", str(tmp_path)]) == 0
        assert "in_progress: 0 done, 0 failed, 0 expired of 2" in capsys.readouterr().out
        assert cli.main(["batches", "cancel", str(tmp_path)]) == 0
        assert all(b.canceled for b in server.batches.values())
        assert cli.main(["batches", "list", str(tmp_path)]) == 0
        assert "collected" in capsys.readouterr().out
        server.hold.set()
        stats = run_items(
            claude(server),
            ITEMS[:2],
            results_path=tmp_path / "results.jsonl",
            provider_batch=FAST,
            progress=False,
        )
        assert stats.ok == 2 and server.submissions == 2


# --------------------------------------------------------------------------- a crash, then a re-run


def _run_py(out: Path, url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "run.py",
        f"hydra.run.dir={out}",
        "model=local_server",
        f"model.api_base={url}/v1",
        "model.model_id=echo",
        "task=dataset",
        "runner.progress=false",
        'stop_sequences=["."]',
        *extra,
    ]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["crash", "ctrl-c"])
def test_run_killed_after_submitting_resumes_without_a_second_submission(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sig: signal.Signals
) -> None:
    gate = threading.Event()

    def gated(messages: list[dict[str, Any]], **kw: Any) -> ChatMessage:
        gate.wait(60)
        return echo(messages)

    srv = BackgroundServer(
        CallableModel(fn=gated, model_id="echo"), ServerSettings(port=0, log_level="warning")
    )
    srv.start()
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    try:
        out = tmp_path / "run"
        cmd = _run_py(out, srv.url, "runner.provider_batch.enabled=true", "runner.provider_batch.poll_s=0.1")
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        state = out / "batches.json"
        deadline = time.monotonic() + 60
        while not (state.exists() and BatchState.load(state).running()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(sig)  # SIGKILL: a crash, no clean-up of any kind; SIGINT: Ctrl-C
        _, stderr = proc.communicate(timeout=30)
        if sig == signal.SIGINT:
            assert "keep running" in stderr and f"modelfactory batches cancel {out}" in stderr, stderr
        assert srv.app.state.serve.batches.created == 1
        assert cli.main(["batches", "list", str(out)]) == 0
        assert "in_progress: 0 done" in capsys.readouterr().out
        gate.set()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert srv.app.state.serve.batches.created == 1  # polled, not submitted again
        online = subprocess.run(
            _run_py(tmp_path / "online", srv.url),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert online.returncode == 0, online.stderr
        b, o = rows(out / "results.jsonl"), rows(tmp_path / "online" / "results.jsonl")
        assert len(b) == len(o) >= 3
        assert [same_fields(r) for r in b.values()] == [same_fields(o[i]) for i in b]
    finally:
        gate.set()
        srv.stop()


# --------------------------------------------------------------------------- Azure OpenAI


def test_azure_batch_end_to_end(tmp_path: Path) -> None:
    """Azure's routes (/openai/files, /openai/batches), api-version on every call, the api-key header,
    /chat/completions as the batch endpoint and each line's url, the deployment name as each line's model."""
    from modelfactory import AzureOpenAIServerModel
    from tests.servers.openai_batches import BatchAPIServer

    with BatchAPIServer(api_key="az-key", deployments=("gpt4o-batch",)) as server:
        model = AzureOpenAIServerModel(
            model_id="gpt-4o",  # the model (its price); the deployment below is what Azure routes to
            azure_deployment="gpt4o-batch",
            azure_endpoint=server.url,
            api_key="az-key",
            api_version="2024-10-21",
            retry={"max_attempts": 1},
        )
        stats = run_items(
            model,
            ITEMS[:3],
            results_path=tmp_path / "results.jsonl",
            provider_batch=FAST,
            stop_sequences=[" |"],
            progress=False,
        )
        assert (stats.ok, stats.failed) == (3, 0), rows(tmp_path / "results.jsonl")
        assert server.submissions == 1
        calls = server.requests
        assert {c.path.split("/")[2] for c in calls} == {"files", "batches"}
        assert all(c.path.startswith("/openai/") for c in calls), [c.path for c in calls]
        assert all(c.query.get("api-version") == "2024-10-21" for c in calls)
        assert all(c.headers.get("api-key") == "az-key" and "authorization" not in c.headers for c in calls)
        (batch,) = server.batches.values()
        assert batch.endpoint == "/chat/completions"
        assert {(line["url"], line["body"]["model"]) for line in server.lines} == {
            ("/chat/completions", "gpt4o-batch")
        }
        got = rows(tmp_path / "results.jsonl")
        assert got["q1"]["content"] == "echo: question 1" and got["q1"]["batch_id"] == batch.id
        assert BatchState.load(tmp_path / "batches.json").batches[0].provider == "azure"
