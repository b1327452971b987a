"""One dataset through the app three ways: one process, 4 joblib jobs, 4 jobs on a 4-worker Ray cluster.

    .venv/bin/python -m bench.ray_vs_joblib [items] [concurrency_per_job] [delay_s]     # 400 8 0.2

The same local OpenAI-compatible server (its own process, ``delay_s`` per reply) and the same items
(a generated JSONL file) for all three, each run as a user would (``python run.py ...``, wall time of the
whole command, start-up and summary included):

- one process: ``task=dataset runner.concurrency=4*C`` (as many requests in flight as the sweeps);
- joblib: ``-m hydra/launcher=joblib hydra.launcher.n_jobs=4 task.shards=4 task.shard=0,1,2,3``;
- Ray: the same sweep with ``hydra/launcher=ray_cluster`` on a local cluster started beforehand
  (``--num-cpus=4``; its start-up is printed apart: a real cluster is up before the sweep).

Columns: wall s, items/s (items / wall), job s (the longest job's item time, from job.json) and
overhead s (wall minus job s: process start, composition, dispatch, summary), and that overhead per
job. Run it twice with few items (``4 8 0``) to see the fixed cost alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import PY, ROOT, clean_env
from tests.servers.ray_cluster import LOOPBACK_ENV, LocalRayCluster


def _job_seconds(job_dirs: list[Path]) -> float:
    times = [float(json.loads((d / "job.json").read_text())["elapsed_s"]) for d in job_dirs]
    return max(times) if times else 0.0


def _run(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall


def _rows(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in out.rglob("results.jsonl") if "merged" not in p.parts)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    per_job = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.2
    jobs = 4
    work = Path(tempfile.mkdtemp(prefix="mf-bench-ray-"))
    server = subprocess.Popen(
        [PY, "-m", "bench.runner_concurrency", "serve", str(delay)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        conf = work / "conf"
        shutil.copytree(ROOT / "modelfactory" / "conf", conf)
        (conf / "model" / "bench_server.yaml").write_text(
            f"_target_: modelfactory.OpenAIServerModel\nmodel_id: m\napi_base: {url}/v1\napi_key: null\n"
        )
        items = work / "items.jsonl"
        items.write_text(
            "".join(json.dumps({"id": f"item-{i}", "prompt": f"question {i}"}) + "\n" for i in range(n))
        )
        env = {**clean_env(), **LOOPBACK_ENV, "PYTHONPATH": str(ROOT)}
        base = [PY, str(ROOT / "run.py")]
        common = [f"--config-dir={conf}", "model=bench_server", "task=dataset", f"task.path={items}"]
        common += ["runner.progress=false", "output.print_reply=false"]
        shards = [f"task.shards={jobs}", "task.shard=" + ",".join(map(str, range(jobs)))]
        results: dict[str, tuple[float, float, int]] = {}

        one = work / "one"
        wall = _run([*base, *common, f"runner.concurrency={jobs * per_job}", f"hydra.run.dir={one}"], env)
        results["one process"] = (wall, _job_seconds([one]), _rows(one))

        jl = work / "joblib"
        cmd = [*base, "-m", *common, f"runner.concurrency={per_job}", f"hydra.sweep.dir={jl}"]
        wall = _run([*cmd, "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", *shards], env)
        results[f"joblib n_jobs={jobs}"] = (wall, _job_seconds([jl / str(i) for i in range(jobs)]), _rows(jl))

        with LocalRayCluster(num_cpus=jobs, env={"PYTHONPATH": str(ROOT)}) as cluster:
            ray_start = cluster.start_s or 0.0
            rd = work / "ray"
            cmd = [*base, "-m", *common, f"runner.concurrency={per_job}", f"hydra.sweep.dir={rd}"]
            cmd += [
                "hydra/launcher=ray_cluster",
                f"hydra.launcher.ray.init.address={cluster.address}",
                *shards,
            ]
            wall = _run(cmd, env)
            results[f"Ray, {jobs} workers"] = (
                wall,
                _job_seconds([rd / str(i) for i in range(jobs)]),
                _rows(rd),
            )
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"{n} items, server latency {delay * 1000:.0f} ms, {jobs * per_job} requests in flight in each setup"
    )
    print(f"{'':22} {'wall s':>7} {'items/s':>8} {'job s':>6} {'overhead s':>10} {'per job':>8} rows")
    for name, (wall, job_s, rows) in results.items():
        count = 1 if name == "one process" else jobs
        overhead = wall - job_s
        print(
            f"{name:22} {wall:7.2f} {n / wall:8.1f} {job_s:6.2f} {overhead:10.2f} {overhead / count:8.2f} "
            f"{rows}/{n}"
        )
    print(f"(Ray cluster start-up, not in the wall times above: {ray_start:.1f} s)")


if __name__ == "__main__":
    main()
