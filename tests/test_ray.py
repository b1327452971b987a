"""Multiruns through ``hydra/launcher=ray_cluster`` on a real local Ray cluster (127.0.0.1 only).

The cluster is the one ``scripts/ci_ray.sh`` started (``MODELFACTORY_RAY_ADDRESS``, with the planted key
in ``MODELFACTORY_RAY_TEST_KEY`` and Ray's files in ``MODELFACTORY_RAY_TEMP_DIR``), else one this module
starts and stops itself (:class:`tests.servers.ray_cluster.LocalRayCluster`). Keys reach the jobs only
through the environment the cluster was started in: the driver never has the key, so a job that used it
got it from its worker, and nothing on disk (the sweep, Ray's session files) may hold it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelfactory.cli import main as cli_main
from modelfactory.job.items import load_dataset, shard_items, shard_of
from tests.servers.ray_cluster import LOOPBACK_ENV, LocalRayCluster
from tests.servers.recording import RecordingServer
from tests.test_secrets import assert_nowhere, completion
from tests.test_sweeps import ROOT, summary_rows

pytest.importorskip("ray")
pytest.importorskip("hydra_plugins.hydra_ray_launcher")

pytestmark = [pytest.mark.slow, pytest.mark.server]

KEY_VAR = "MF_RAY_TEST_KEY"  # what the model config reads (${oc.env:MF_RAY_TEST_KEY}) on the workers


@dataclass
class Cluster:
    address: str
    key: str  # in the environment of the cluster's workers only
    temp_dir: Path  # Ray's session files, scanned for the key


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Cluster]:
    address = os.environ.get("MODELFACTORY_RAY_ADDRESS")
    if address:  # scripts/ci_ray.sh
        yield Cluster(
            address, os.environ["MODELFACTORY_RAY_TEST_KEY"], Path(os.environ["MODELFACTORY_RAY_TEMP_DIR"])
        )
        return
    key = f"sk-planted-ray-{secrets.token_hex(8)}"
    with LocalRayCluster(num_cpus=2, env={KEY_VAR: key, "PYTHONPATH": str(ROOT)}) as cluster:
        yield Cluster(cluster.address, key, cluster.temp_dir)


def ray_sweep(
    cluster: Cluster, sweep_dir: Path, *overrides: str, config_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """run.py -m on the cluster, from a driver whose environment does not hold the key."""
    env = {k: v for k, v in os.environ.items() if k not in (KEY_VAR, "HYDRA_FULL_ERROR")}
    env.update(LOOPBACK_ENV)
    extra = [f"--config-dir={config_dir}"] if config_dir else []
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "-m",
            *extra,
            f"hydra.sweep.dir={sweep_dir}",
            "hydra/launcher=ray_cluster",
            f"hydra.launcher.ray.init.address={cluster.address}",
            *overrides,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_sharded_dataset_on_ray_summary_resume_and_merge(ray_cluster: Cluster, tmp_path: Path) -> None:
    dataset = load_dataset(ROOT / "examples" / "dataset.jsonl")
    args = ("model=custom_callable", "task=dataset", "task.shards=3", "task.shard=range(0,3)")
    proc = ray_sweep(ray_cluster, tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    (row,) = summary_rows(tmp_path)
    assert row["job"] == "0,1,2" and row["task.shard"] == "3/3" and row["ok"] == "12" and row["error"] == ""
    for i in range(3):
        rows = [json.loads(x) for x in (tmp_path / str(i) / "results.jsonl").read_text().splitlines()]
        assert sorted(r["id"] for r in rows if r["error"] is None) == sorted(
            it.id for it in shard_items(dataset, 3, i)
        )  # rows land in the order items finish
        assert all(r["content"].startswith("Echo: ") for r in rows)

    shard2 = tmp_path / "2" / "results.jsonl"  # a worker died after the first row of shard 2
    lines = shard2.read_text().splitlines()
    assert len(lines) >= 2
    shard2.write_text(lines[0] + "\n")
    proc = ray_sweep(ray_cluster, tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads((tmp_path / "2" / "job.json").read_text())
    assert resumed["runs"] == 2 and resumed["last_run"]["skipped"] == 1
    assert resumed["last_run"]["ok"] == len(lines) - 1
    untouched = json.loads((tmp_path / "0" / "job.json").read_text())
    assert untouched["last_run"]["ok"] == 0 and untouched["last_run"]["skipped"] > 0
    (row,) = summary_rows(tmp_path)
    assert row["ok"] == "12" and row["error"] == ""

    assert cli_main(["merge", str(tmp_path)]) == 0
    (merged,) = (tmp_path / "merged").glob("*/results.jsonl")
    merged_ids = [json.loads(x)["id"] for x in merged.read_text().splitlines()]
    assert sorted(merged_ids) == sorted(it.id for it in dataset)


def test_keys_reach_ray_workers_and_no_file_keeps_them(ray_cluster: Cluster, tmp_path: Path) -> None:
    """The key is only in the cluster's environment: the server sees it from both jobs; the sweep dir,
    Ray's session files and the driver's output never hold it (a reply echoing it is masked)."""
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "modelfactory" / "conf", conf)
    items = tmp_path / "items.jsonl"
    ids = [f"q{i}" for i in range(20)]
    ids = [next(i for i in ids if shard_of(i, 2) == s) for s in (0, 1)]  # one item in each shard
    items.write_text("".join(json.dumps({"id": i, "prompt": "say my key"}) + "\n" for i in ids))
    sweep_dir = tmp_path / "sweep"
    with RecordingServer() as server:
        (conf / "model" / "via_cluster.yaml").write_text(
            "_target_: modelfactory.OpenAIServerModel\nmodel_id: m\n"
            f"api_base: {server.url}/v1\napi_key: ${{oc.env:{KEY_VAR}}}\n"
        )
        for _ in range(2):
            server.enqueue(200, completion(f"your key is {ray_cluster.key}"))
        proc = ray_sweep(
            ray_cluster,
            sweep_dir,
            "model=via_cluster",
            "task=dataset",
            f"task.path={items}",
            "task.shards=2",
            "task.shard=0,1",
            config_dir=conf,
        )
        assert proc.returncode == 0, proc.stderr
        sent = [r.headers.get("authorization", "") for r in server.requests]
    assert sent == [f"Bearer {ray_cluster.key}"] * 2  # both jobs, on Ray workers, had the key
    (row,) = summary_rows(sweep_dir)
    assert row["ok"] == "2" and row["error"] == ""
    replies = [
        json.loads(x)
        for job in ("0", "1")
        for x in (sweep_dir / job / "results.jsonl").read_text().splitlines()
    ]
    assert [r["content"] for r in replies] == ["your key is ***"] * 2
    assert_nowhere([ray_cluster.key], sweep_dir, proc.stdout, proc.stderr)
    sessions = list(ray_cluster.temp_dir.glob("session_*"))
    assert sessions and assert_nowhere([ray_cluster.key], ray_cluster.temp_dir) > 10  # logs, GCS files
