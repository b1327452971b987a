"""``hydra/sweeper=search`` (modelfactory/conf/hydra/sweeper/search.yaml): the real Optuna sweeper of the
``search`` extra, built from the shipped config, maximizes what each job returns and is reproducible.

A task function of the test returns a score of ``generation.temperature`` whose best value is known, so
the test says whether the shipped config searches in the right direction (the plugin's own default is
minimize); then the app itself (``run.py -m hydra/sweeper=search``) searches a scored task on a
``CallableModel`` whose accuracy grows with the temperature, each job returning its primary score.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the search extra (hydra-optuna-sweeper)")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "modelfactory" / "conf"

# A job per trial: the shipped config.yaml (so search.yaml composes as users get it), and a score that
# peaks at temperature 0.3; each trial's temperature and score are printed for the test to read.
TASK = """
import hydra
from modelfactory.job.spec import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="pkg://modelfactory.conf", config_name="config")
def score(cfg):
    t = float(cfg.generation.temperature)
    value = 1.0 - (t - 0.3) ** 2
    print(f"trial {t!r} {value!r}", flush=True)
    return value


score()
"""


def test_search_config_composes_over_the_plugin() -> None:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="config", overrides=["hydra/sweeper=search"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 0
    assert sweeper.n_jobs == 1 and sweeper.n_trials == 20
    assert cfg.task.type == "prompt"  # and the app's own config is untouched by it


def _search(tmp_path: Path, name: str) -> tuple[list[tuple[float, float]], dict[str, object]]:
    script = tmp_path / "task.py"
    script.write_text(TASK)
    sweep_dir = tmp_path / name
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "-m",
            "hydra/sweeper=search",
            "generation.temperature=interval(0.0,1.0)",
            "hydra.sweeper.n_trials=12",
            "hydra.sweeper.sampler.n_startup_trials=4",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = [
        (float(t), float(v))
        for t, v in (ln.split()[1:] for ln in proc.stdout.splitlines() if ln.startswith("trial "))
    ]
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    return trials, results


@pytest.mark.slow
def test_search_maximizes_the_returned_score_reproducibly(tmp_path: Path) -> None:
    trials, results = _search(tmp_path, "a")
    assert len(trials) == 12
    best_t, best_v = max(trials, key=lambda tv: tv[1])
    assert results["best_value"] == pytest.approx(best_v)  # maximize: minimize would report the worst
    assert results["best_params"] == {"generation.temperature": pytest.approx(best_t)}
    # TPE after its random start-up trials samples near the best so far: the later half does better
    startup, guided = trials[:4], trials[4:]
    assert max(v for _, v in guided) >= max(v for _, v in startup)
    again, _ = _search(tmp_path, "b")
    assert again == trials  # sampler.seed: 0, the same scores give the same trials


def tempered(messages: list[dict[str, Any]], temperature: float | None = None, **_: Any) -> str:
    """Answers item ``right <i>`` of ten right exactly when ``i < 10 * temperature``: accuracy grows with
    the temperature (a ``CallableModel`` fn: per-call parameters reach it by name)."""
    i = int(str(messages[-1]["content"]).split()[-1])
    return "yes" if i < 10 * (temperature or 0.0) else "no"


@pytest.mark.slow
def test_the_app_searches_its_primary_score(tmp_path: Path) -> None:
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"right {i}", "target": "yes"}) + "\n"
                            for i in range(10)))  # fmt: skip
    sweep_dir = tmp_path / "search"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "-m", "hydra/sweeper=search", "hydra.sweeper.n_trials=3",
         "model=custom_callable", "model.fn=tests.test_search_sweeper.tempered", "task=dataset",
         f"task.path={data}", "task.scorers=[includes]", "generation.temperature=interval(0.0,1.0)",
         "runner.progress=false", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [json.loads((d / "job.json").read_text()) for d in sorted(sweep_dir.glob("[0-9]*"))]
    temps = [
        yaml.safe_load((d / ".hydra" / "config.yaml").read_text())["generation"]["temperature"]
        for d in sorted(sweep_dir.glob("[0-9]*"))
    ]
    assert len(jobs) == 3
    for job, t in zip(jobs, temps, strict=True):  # each trial's score is what its temperature earns
        assert job["primary"] == {
            "scorer": "includes",
            "value": pytest.approx(sum(i < 10 * t for i in range(10)) / 10),
        }
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best = max(range(3), key=lambda j: jobs[j]["primary"]["value"])
    assert results["best_value"] == pytest.approx(jobs[best]["primary"]["value"])  # the best trial found
    assert results["best_params"] == {"generation.temperature": pytest.approx(temps[best])}
