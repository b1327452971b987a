"""tracking=mlflow / tracking=wandb for real: run.py multiruns under real launchers, then the MLflow SQLite
store read back with ``mlflow.search_runs`` and the W&B offline run files parsed record by record.

Each sweep runs twice into the same sweep dir: the second time every job resumes (its items are done),
and must continue its tracker run, not open another. The secret test plants keys through the env, a
``${oc.env:...}`` config value and a literal in a config file, and scans the tracker's own files.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from modelfactory.settings import REDACTED
from modelfactory.tracking import TrackingCallback, job_params, read_state, tracking_settings
from tests.servers.recording import RecordingServer
from tests.test_secrets import assert_nowhere, completion, openai_model_file

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "modelfactory" / "conf"
JOB_ARGS = ["model=custom_callable", "generation.temperature=0,0.7", "task=dataset", "task.limit=3"]


def app(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """run.py from ``cwd`` (the project dir trackers write to by default), flags first."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI")}
    full_env = {k: v for k, v in full_env.items() if not k.startswith("WANDB_")}
    full_env.update(env or {})
    flags = [a for a in args if a.startswith("-")]
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *flags, *[a for a in args if not a.startswith("-")]],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def saved_run_id(directory: Path, backend: str) -> str:
    """The run id the callback kept in a sweep or job dir (``.tracking/<backend>.json``)."""
    state = read_state(directory, backend)
    assert state is not None, f"no {backend} state in {directory}"
    return str(state["run_id"])


# ------------------------------------------------------------------------------------------ W&B files


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a ``run-<id>.wandb`` file: W&B's header, then LevelDB-log framing (32 KiB
    blocks; 7-byte record headers: crc32, length, type full/first/middle/last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"not a W&B transaction log: {path}"
    block, pos, pending, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending + chunk)
            out.append(record)
            pending = b""
        else:
            pending = (pending if kind == 3 else b"") + chunk
    return out


def wandb_run(run_dir: Path) -> dict[str, Any]:
    """What one offline run wrote: id, group, job type, config, summary metrics, saved files."""
    (log_file,) = run_dir.glob("run-*.wandb")
    run: dict[str, Any] = {"config": {}, "summary": {}, "history": [], "files": set(), "dir": run_dir}
    for record in wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(id=record.run.run_id, group=record.run.run_group, job_type=record.run.job_type)
            run["name"] = record.run.display_name
            for item in record.run.config.update:
                run["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run["config"][item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or ".".join(item.nested_key)
                run["summary"][key] = json.loads(item.value_json)
        elif kind == "history":
            run["history"].append(
                {(i.key or ".".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            )
        elif kind == "files":
            run["files"].update(f.path for f in record.files.files)
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


# ------------------------------------------------------------------------------------------ fast checks


def _compose(*overrides: str) -> Any:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_tracking_is_off_by_default_and_wired_before_the_summary() -> None:
    cfg = _compose()
    assert cfg.tracking.backend == "none" and tracking_settings(cfg) is None
    callbacks = list(cfg.hydra.callbacks)
    # Hydra runs on_multirun_end in reverse order: the tracker must come after summary.* / report.html
    assert callbacks.index("tracking") < callbacks.index("summary")
    assert tracking_settings(_compose("tracking=mlflow")) == {
        "backend": "mlflow",
        "uri": None,
        "experiment": "modelfactory",
        "artifacts": True,
    }
    assert (tracking_settings(_compose("tracking=wandb")) or {}).get("backend") == "wandb"


def test_job_params_are_the_overrides_and_the_redacted_model_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-planted-in-env-0000")
    monkeypatch.setenv("MY_SERVER_KEY", "sk-planted-never-resolved-0001")
    cfg = _compose(
        "model=local_server",
        "++model.api_key=${oc.env:MY_SERVER_KEY}",
        "generation.temperature=0.5",
        "++model.default_headers={X-Auth-Token: literal-header-secret, X-Trace: on}",
        "+model.user_note=see tok-planted-in-env-0000",
        "tracking=mlflow",
        "tracking.experiment=x",
    )
    params = job_params(cfg)
    assert params["model"] == "local_server" and params["generation.temperature"] == "0.5"
    assert params["model._target_"] == "modelfactory.OpenAIServerModel"
    assert params["model.api_key"] == REDACTED  # both the config value and the override are masked
    assert params["model.default_headers.X-Auth-Token"] == REDACTED  # flattened from the model config
    # any header but the public ones may be a credential, whatever its name (issue 16, item 4)
    assert params["model.default_headers.X-Trace"] == REDACTED
    assert json.loads(params["model.default_headers"]) == {
        "X-Auth-Token": REDACTED,
        "X-Trace": REDACTED,
    }  # override
    assert params["model.user_note"] == "see ***"  # a secret-looking env var's value, wherever it shows
    assert not any(k.startswith("tracking") for k in params)  # the tracker's own settings are not params
    text = json.dumps(params)
    assert "literal-header-secret" not in text and "sk-planted-never-resolved-0001" not in text


def test_the_callback_travels_to_launcher_workers_without_its_live_run() -> None:
    cb = TrackingCallback()
    cb._live = object()  # type: ignore[assignment]  # stands for a client or an open run: not picklable
    cb._state = {"run_id": "r"}
    clone = pickle.loads(pickle.dumps(cb))
    assert clone._live is None and clone._state is None


def test_a_tracker_problem_is_a_warning_not_a_failed_job(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIDDEN_API_KEY", "sk-planted-in-a-tracker-error-42")
    cfg = OmegaConf.create(
        {
            "tracking": {
                "backend": "mlflow",
                "uri": "notascheme://user:sk-planted-in-a-tracker-error-42@host",
            },
            "hydra": {"mode": "RUN", "runtime": {"output_dir": str(tmp_path), "cwd": str(tmp_path)}},
        }
    )
    callback = TrackingCallback()
    callback.on_job_start(cfg)  # must not raise
    callback.on_job_end(cfg, None)
    assert "tracking=mlflow: could not start the job's run" in caplog.text
    assert "sk-planted-in-a-tracker-error-42" not in caplog.text
    assert read_state(tmp_path, "mlflow") is None


# ------------------------------------------------------------------------------------------ MLflow


def mlflow_store(template: Path, db: Path) -> Path:
    """A migrated, empty store at ``db`` (from the ``mlflow_template`` fixture, tests/conftest.py): where
    run.py will find it (and use it as it would a new one)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, db)
    return db


def _mlflow_runs(db: Path, experiment: str = "modelfactory") -> list[Any]:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{db}")
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


@pytest.mark.slow
def test_mlflow_joblib_sweep_nests_every_job_and_a_resumed_job_keeps_its_run(
    tmp_path: Path, mlflow_template: Path
) -> None:
    mlflow_store(mlflow_template, tmp_path / "mlruns.db")  # the default store: where run.py starts
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *JOB_ARGS, "tracking=mlflow", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    proc = app(tmp_path, *args, f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr
    db = tmp_path / "mlruns.db"  # the default store: in the directory run.py was started from
    assert db.is_file()

    runs = _mlflow_runs(db)
    (parent,) = [r for r in runs if r.data.tags.get("modelfactory.kind") == "sweep"]
    jobs = sorted(
        (r for r in runs if r.data.tags.get("modelfactory.kind") == "job"),
        key=lambda r: r.data.tags["modelfactory.job"],
    )
    assert len(runs) == 3 and len(jobs) == 2
    assert parent.info.status == "FINISHED" and parent.info.run_id == saved_run_id(sweep_dir, "mlflow")
    assert parent.data.params["generation.temperature"] == "0,0.7"
    assert parent.data.metrics["jobs"] == 2 and parent.data.metrics["ok"] == 6
    for num, (run, temp) in enumerate(zip(jobs, ["0", "0.7"], strict=True)):
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id  # nested under the sweep
        assert run.info.status == "FINISHED"
        assert run.data.tags["modelfactory.job_dir"] == str(sweep_dir / str(num))
        assert (
            run.data.params["generation.temperature"] == temp
            and run.data.params["model"] == "custom_callable"
        )
        assert run.data.params["model._target_"] == "modelfactory.CallableModel"
        assert run.data.params["model.fn"] == "modelfactory.examples.custom_model.custom_model"
        m = run.data.metrics
        assert m["ok"] == 3 and m["failed"] == 0 and m["error_rate"] == 0
        # the job's own numbers, as it left them on disk: three rows, their median and slowest latency
        rows = [
            json.loads(line) for line in (sweep_dir / str(num) / "results.jsonl").read_text().splitlines()
        ]
        latencies = sorted(r["latency_s"] for r in rows)
        assert (m["p50_latency_s"], m["p95_latency_s"]) == (latencies[1], latencies[2])
        elapsed = json.loads((sweep_dir / str(num) / "job.json").read_text())["elapsed_s"]
        assert m["elapsed_s"] == elapsed and m["items_per_s"] == round(3 / elapsed, 3)
        assert "cost_usd" not in m  # nothing priced these items: no made-up cost
        assert run.info.run_id == saved_run_id(sweep_dir / str(num), "mlflow")

    import mlflow

    client = mlflow.MlflowClient()
    assert {a.path for a in client.list_artifacts(jobs[0].info.run_id)} == {"results.jsonl", "job.json"}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {
        "summary.csv",
        "summary.md",
        "report.html",
    }
    logged = Path(client.download_artifacts(jobs[1].info.run_id, "results.jsonl", str(tmp_path / "dl")))
    assert logged.read_text() == (sweep_dir / "1" / "results.jsonl").read_text()

    # the same sweep again into the same dir: every job resumes, and continues its own run
    proc = app(tmp_path, *args, f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr
    again = _mlflow_runs(db)
    assert sorted(r.info.run_id for r in again) == sorted(r.info.run_id for r in runs)  # no new run
    assert json.loads((sweep_dir / "0" / "job.json").read_text())["runs"] == 2
    history = client.get_metric_history(jobs[0].info.run_id, "ok")
    assert sorted(h.step for h in history) == [1, 2] and all(h.value == 3 for h in history)


@pytest.mark.slow
def test_mlflow_uri_from_the_environment_and_a_single_run(tmp_path: Path) -> None:
    """The one MLflow test on a store run.py creates (and migrates) itself; the others start from a copy."""
    db = tmp_path / "elsewhere" / "store.db"
    db.parent.mkdir()
    run_dir = tmp_path / "run"
    proc = app(
        tmp_path,
        "model=custom_callable",
        "tracking=mlflow",
        "tracking.experiment=single",
        f"hydra.run.dir={run_dir}",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{db}"},
    )
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "mlruns.db").exists()
    (run,) = _mlflow_runs(db, "single")
    assert "mlflow.parentRunId" not in run.data.tags and run.info.status == "FINISHED"
    assert run.data.metrics["ok"] == 1 and run.data.params["model"] == "custom_callable"
    assert (db.parent / "mlruns" / "single").is_dir()  # artifacts next to the store, not in the cwd
    assert {a.path for a in __import__("mlflow").MlflowClient().list_artifacts(run.info.run_id)} == {
        "results.jsonl",
        "job.json",
        "result.json",
    }


# ------------------------------------------------------------------------------------------ W&B


def _wandb_runs(root: Path) -> list[dict[str, Any]]:
    return [wandb_run(d) for d in sorted((root / "wandb").glob("offline-run-*"))]


@pytest.mark.slow
def test_wandb_offline_submitit_sweep_groups_jobs_and_a_resumed_job_keeps_its_id(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    args = [
        "-m",
        *JOB_ARGS,
        "tracking=wandb",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=3",
    ]
    proc = app(tmp_path, *args, f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr
    runs = _wandb_runs(tmp_path)  # offline, in the directory run.py was started from
    sweep_state = read_state(sweep_dir, "wandb")
    assert sweep_state is not None
    (parent,) = [r for r in runs if r["job_type"] == "sweep"]
    jobs = sorted((r for r in runs if r["job_type"] == "job"), key=lambda r: r["config"]["modelfactory.job"])
    assert len(runs) == 3
    assert parent["id"] == sweep_state["run_id"] and {r["group"] for r in runs} == {sweep_state["group"]}
    assert parent["summary"]["jobs"] == 2 and parent["summary"]["ok"] == 6
    assert {"summary.csv", "summary.md", "report.html"} <= parent["files"]
    for num, (run, temp) in enumerate(zip(jobs, ["0", "0.7"], strict=True)):
        assert run["id"] == saved_run_id(sweep_dir / str(num), "wandb")
        assert run["config"]["generation.temperature"] == temp
        assert run["config"]["model._target_"] == "modelfactory.CallableModel"
        assert (
            run["summary"]["ok"] == 3 and run["summary"]["failed"] == 0 and run["summary"]["items_per_s"] > 0
        )
        assert run["history"] and run["history"][0]["_step"] == 1
        assert {"results.jsonl", "job.json"} <= run["files"] and run["exit_code"] == 0
        copied = run["dir"] / "files" / "results.jsonl"
        assert copied.read_text() == (sweep_dir / str(num) / "results.jsonl").read_text()

    proc = app(tmp_path, *args, f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr
    after = _wandb_runs(tmp_path)
    job_ids = [r["id"] for r in after if r["job_type"] == "job"]
    assert len(job_ids) == 4 and set(job_ids) == {r["id"] for r in jobs}  # resumed: same ids, no new run
    assert {r["id"] for r in after if r["job_type"] == "sweep"} == {parent["id"]}
    resumed = [r for r in after if r["job_type"] == "job" and r["dir"] not in {j["dir"] for j in jobs}]
    assert all(r["history"][0]["_step"] == 2 for r in resumed)  # the job's second run


# ------------------------------------------------------------------------------------------ secrets

PLANTED = {
    "env": "sk-planted-tracking-env-1212abab",
    "config": "sk-planted-tracking-config-3434cdcd",
    "literal": "sk-planted-tracking-literal-5656efef",
}


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("backend", ["mlflow", "wandb"])
def test_no_planted_key_reaches_the_tracker_store(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "mlflow":
        mlflow_store(request.getfixturevalue("mlflow_template"), tmp_path / "mlruns.db")
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    (tmp_path / "items.jsonl").write_text(
        '{"id": "echo", "prompt": "say my key"}\n{"id": "deny", "prompt": "x"}\n'
    )
    with RecordingServer() as server:
        openai_model_file(conf / "via_config.yaml", server.url, "${oc.env:CONFIG_SERVER_KEY}")
        openai_model_file(conf / "via_literal.yaml", server.url, PLANTED["literal"])
        jobs = ["env", "config", "literal"]
        for job in jobs:
            server.enqueue(200, completion(f"your key is {PLANTED[job]}"))
            server.enqueue(
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {PLANTED[job]}",
                        "type": "invalid_request_error",
                    }
                },
            )
        proc = app(
            tmp_path,
            "-m",
            f"--config-dir={tmp_path / 'conf'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "model=azure_openai,via_config,via_literal",
            "task=dataset",
            f"task.path={tmp_path / 'items.jsonl'}",
            "runner.concurrency=1",
            f"tracking={backend}",
            env={
                "AZURE_OPENAI_API_KEY": PLANTED["env"],
                "AZURE_OPENAI_ENDPOINT": server.url,
                "AZURE_OPENAI_MODEL": "dep",
                "OPENAI_API_VERSION": "2024-10-21",
                "CONFIG_SERVER_KEY": PLANTED["config"],
            },
        )
        assert proc.returncode == 0, proc.stderr
        sent = [r.headers.get("api-key") or r.headers.get("authorization", "") for r in server.requests]
    for i, job in enumerate(jobs):  # every key really was used, so it was there to leak
        assert PLANTED[job] in sent[2 * i]
    store = tmp_path / ("mlruns" if backend == "mlflow" else "wandb")
    count = assert_nowhere(list(PLANTED.values()), store, proc.stdout, proc.stderr)
    assert count >= (3 * 2 + 3 if backend == "mlflow" else 4 * 3)  # artifacts / offline run files
    if backend == "mlflow":
        db = tmp_path / "mlruns.db"
        data = db.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("mlruns.db-*"))
        assert not any(s.encode() in data for s in PLANTED.values())
        runs = [r for r in _mlflow_runs(db) if r.data.tags.get("modelfactory.kind") == "job"]
        by_model = {r.data.params["model"]: r.data.params for r in runs}
        assert by_model["via_literal"]["model.api_key"] == REDACTED
        assert by_model["via_config"]["model.api_key"] == REDACTED
        assert {r.data.metrics["failed"] for r in runs} == {1}
    else:
        runs = [r for r in _wandb_runs(tmp_path) if r["job_type"] == "job"]
        assert {r["config"]["model.api_key"] for r in runs if "model.api_key" in r["config"]} == {REDACTED}
        assert {r["summary"]["failed"] for r in runs} == {1}


# ------------------------------------------------------------------------------------------ scores


def _job_end(job_dir: Path, tracking: dict[str, Any]) -> None:
    """The callback around a finished single run in ``job_dir``, in this process (as the basic launcher)."""
    cfg = OmegaConf.create(
        {
            "tracking": tracking,
            "hydra": {"mode": "RUN", "runtime": {"output_dir": str(job_dir), "cwd": str(job_dir.parent)}},
        }
    )
    callback = TrackingCallback()
    callback.on_job_start(cfg)
    assert read_state(job_dir, tracking["backend"]) is not None
    callback.on_job_end(cfg, None)


def _expected_scores(job_dir: Path) -> dict[str, float]:
    summaries = json.loads((job_dir / "job.json").read_text())["scores"]
    out = {}
    for label, s in summaries.items():
        out |= {f"score/{label}": s["mean"], f"score/{label}_stderr": s["stderr"]}
        out |= {f"score/{label}_ci_low": s["ci_low"], f"score/{label}_ci_high": s["ci_high"]}
        out |= {f"score/{label}_n": s["n"], f"score/{label}_unscored": s["unscored"]}
    return out


@pytest.mark.slow
def test_mlflow_logs_each_scorer_as_metrics(tmp_path: Path, mlflow_template: Path) -> None:
    from tests.scored_sweep import scored_sweep

    sweep = scored_sweep(tmp_path)
    db = mlflow_store(mlflow_template, tmp_path / "mlruns.db")
    tracking = {"backend": "mlflow", "uri": f"sqlite:///{db}", "experiment": "scores", "artifacts": False}
    for job in ("0", "1"):
        _job_end(sweep / job, tracking)
    runs = {r.data.tags["modelfactory.job_dir"]: r for r in _mlflow_runs(db, "scores")}
    for job in ("0", "1"):
        metrics = runs[str((sweep / job).resolve())].data.metrics
        expected = _expected_scores(sweep / job)
        assert {k: v for k, v in metrics.items() if k.startswith("score/")} == expected
        assert metrics["ok"] == (3 if job == "0" else 2)
    bad = runs[str((sweep / "1").resolve())].data.metrics
    assert (bad["score/includes"], bad["score/includes_n"], bad["score/includes_unscored"]) == (0.5, 2, 1)


@pytest.mark.slow
def test_wandb_logs_each_scorer_as_metrics(tmp_path: Path) -> None:
    from tests.scored_sweep import scored_sweep

    sweep = scored_sweep(tmp_path)
    tracking = {"backend": "wandb", "mode": "offline", "dir": str(tmp_path / "w"), "artifacts": False}
    _job_end(sweep / "0", tracking)
    import wandb

    wandb.teardown()  # the W&B service writes the offline run file behind us: wait for it to finish
    (run,) = _wandb_runs(tmp_path / "w")
    expected = _expected_scores(sweep / "0")
    assert {k: v for k, v in run["summary"].items() if k.startswith("score/")} == expected, run
    assert run["history"][0]["score/includes"] == 1.0 and run["history"][0]["score/exact"] == pytest.approx(
        2 / 3
    )
