"""Multiruns: launchers (joblib, submitit_local) run for real, the summary table, the shipped sweep configs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from modelfactory.hydra_callbacks import summarize_sweep

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "modelfactory" / "conf"
SUBMITIT_SECRET = "sk-planted-submitit-env-7777abcd"


def sweep(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(env or {})
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            *[a for a in args if a.startswith("-")],  # flags (-m) before the overrides
            f"hydra.sweep.dir={tmp_path}",
            *[a for a in args if not a.startswith("-")],
        ],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_compare_models_experiment_with_joblib(tmp_path: Path) -> None:
    """The ready sweep, its model list overridden, in parallel with joblib: 2 temperatures x 1 model."""
    proc = sweep(
        tmp_path,
        "experiment=compare_models",
        "model=custom_callable",
        "task.limit=3",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )
    assert proc.returncode == 0, proc.stderr
    rows = summary_rows(tmp_path)
    assert [(r["job"], r["model"], r["generation.temperature"]) for r in rows] == [
        ("0", "custom_callable", "0.0"),
        ("1", "custom_callable", "0.7"),
    ]
    assert all(r["ok"] == "3" and r["failed"] == "0" and r["error"] == "" for r in rows)
    assert all(float(r["items_per_s"]) > 0 and r["p95_latency_s"] for r in rows)
    assert "| custom_callable | 0.0 |" in proc.stdout  # the table is printed too
    assert (tmp_path / "summary.md").read_text().count("| custom_callable |") == 2
    for job in ("0", "1"):
        assert len((tmp_path / job / "results.jsonl").read_text().splitlines()) == 3


def test_submitit_local_launcher_and_a_failing_job(tmp_path: Path) -> None:
    proc = sweep(
        tmp_path,
        "-m",
        "model=custom_callable,azure_openai",
        "task=dataset",
        "task.limit=2",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=2",
        env={"AZURE_OPENAI_API_KEY": SUBMITIT_SECRET},  # in the environment of the submitted jobs
    )
    assert proc.returncode == 0, proc.stderr
    ok, bad = summary_rows(tmp_path)
    assert ok["model"] == "custom_callable" and ok["ok"] == "2" and ok["error"] == ""
    assert bad["model"] == "azure_openai" and bad["ok"] == "0"
    assert bad["error"].startswith("ConfigError:") and "AZURE_OPENAI_MODEL" in bad["error"]
    job = json.loads((tmp_path / "1" / "job.json").read_text())
    assert job["error"]["type"] == "ConfigError"
    submitit_files = list((tmp_path / ".submitit").rglob("*"))
    assert any(p.suffix == ".pkl" for p in submitit_files)  # submitit pickles jobs into the sweep dir
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SUBMITIT_SECRET.encode() not in path.read_bytes(), path


def test_summary_of_a_partly_written_sweep(tmp_path: Path) -> None:
    """Jobs that died without job.json (killed, node lost) still get a row that says so."""
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- model=openai_gpt4o\n- generation.temperature=0.5\n")
    rows = [
        {
            "id": "a",
            "content": "x",
            "usage": {"input_tokens": 2, "output_tokens": 4},
            "latency_s": 0.2,
            "error": None,
        },
        {"id": "b", "content": None, "usage": None, "latency_s": 0.1, "error": {"type": "E", "message": "m"}},
        {
            "id": "b",
            "content": "y",
            "usage": {"input_tokens": 1, "output_tokens": 1},
            "latency_s": 0.4,
            "error": None,
        },
    ]
    (job / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = summarize_sweep(tmp_path)
    (row,) = summary_rows(tmp_path)
    assert row["model"] == "openai_gpt4o" and row["generation.temperature"] == "0.5"
    assert row["ok"] == "2" and row["failed"] == "0"  # the newest row of "b" wins
    assert row["tokens_in"] == "3" and row["tokens_out"] == "5" and row["p95_latency_s"] == "0.4"
    assert "did not finish" in row["error"] and "openai_gpt4o" in table


def test_summary_follows_a_renamed_results_file(tmp_path: Path) -> None:
    """``output.results_file`` renamed in the config: the summary reads the jobs' rows from that file."""
    proc = sweep(
        tmp_path,
        "-m",
        "model=custom_callable",
        "task=dataset",
        "task.limit=2",
        "output.results_file=other.jsonl",
        "generation.temperature=0,0.7",
    )
    assert proc.returncode == 0, proc.stderr
    rows = summary_rows(tmp_path)
    assert [(r["job"], r["ok"], r["failed"], r["error"]) for r in rows] == [
        ("0", "2", "0", ""),
        ("1", "2", "0", ""),
    ]
    assert all(float(r["items_per_s"]) > 0 and r["p95_latency_s"] for r in rows)
    for job in ("0", "1"):
        assert len((tmp_path / job / "other.jsonl").read_text().splitlines()) == 2
        assert not (tmp_path / job / "results.jsonl").exists()


def test_summary_of_a_killed_job_with_a_renamed_results_file(tmp_path: Path) -> None:
    """No job.json (the job died), results in a renamed file: the job's saved config names the file."""
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- model=openai_gpt4o\n- output.results_file=mine.jsonl\n")
    (job / ".hydra" / "config.yaml").write_text(
        "output:\n  result_file: result.json\n  results_file: mine.jsonl\n"
    )
    row = {
        "id": "a",
        "content": "x",
        "usage": {"input_tokens": 2, "output_tokens": 4},
        "latency_s": 0.2,
        "error": None,
    }
    (job / "mine.jsonl").write_text(json.dumps(row) + "\n")
    summarize_sweep(tmp_path)
    (summary,) = summary_rows(tmp_path)
    assert summary["ok"] == "1" and summary["tokens_out"] == "4" and "did not finish" in summary["error"]


def _compose(*overrides: str, hydra_cfg: bool = False):  # type: ignore[no-untyped-def]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_cfg)


def test_compare_models_names_existing_configs() -> None:
    cfg = _compose("experiment=compare_models", hydra_cfg=True)
    assert cfg.task.type == "dataset" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = cfg.hydra.sweeper.params
    models = str(params.model).split(",")
    assert len(models) >= 3 and all((CONF / "model" / f"{m}.yaml").is_file() for m in models)
    assert len(str(params["generation.temperature"]).split(",")) >= 2


def test_slurm_launcher_writes_the_sbatch_script_we_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real submitit launcher, built from conf/hydra/launcher/slurm.yaml, up to the sbatch script it
    would submit: what `hydra.launcher.partition=gpu` and the file's resources become on the cluster."""
    import hydra
    import submitit

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit refuses to start where srun is absent
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = _compose(
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.launcher.submitit_folder={tmp_path / 'submitit'}",
        hydra_cfg=True,
    )
    launcher = hydra.utils.instantiate(cfg.hydra.launcher)
    executors: list[Any] = []
    # stop at the submission: everything before it (parameter checks, the sbatch script) is submitit's own
    monkeypatch.setattr(submitit.AutoExecutor, "map_array", lambda self, *a: executors.append(self) or [])
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    assert launcher.launch([["model=openai_gpt4o"]], 0) == []
    (executor,) = executors
    script = executor._executor._make_submission_file_text("python run.py", "uid")
    for line in ("--time=240", "--cpus-per-task=4", "--mem=16GB", "--nodes=1", "--partition=gpu"):
        assert f"#SBATCH {line}\n" in script
    assert "--gpus-per-node" not in script and "--account" not in script  # null: left to the cluster
    assert executor._executor.parameters["array_parallelism"] == 64  # jobs of a sweep at once


def test_ray_launcher_config_composes() -> None:
    # hydra-ray-launcher is in `dev`; it runs for real in tests/test_ray.py
    ray = _compose("hydra/launcher=ray_cluster", hydra_cfg=True).hydra.launcher
    assert ray._target_.endswith("RayLauncher") and ray.ray.init.address == "auto"
    assert ray.ray.init.object_store_memory is None  # else ray.init refuses to join a cluster
    # and that neither file is in the way of a normal composition
    assert _compose().task.type == "prompt"
