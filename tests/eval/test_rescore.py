"""``modelfactory score`` and ``modelfactory compare`` on real runs of task=capitals (run.py, CallableModel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelfactory.cli import main
from modelfactory.errors import ConfigError
from modelfactory.eval.rescore import read_scores, rescore_run

ROOT = Path(__file__).resolve().parents[2]


def run_capitals(out: Path, fn: str) -> Path:
    done = subprocess.run(
        [sys.executable, "run.py", "model=custom_callable", f"model.fn=tests.eval.capital_answers.{fn}",
         "task=capitals", f"hydra.run.dir={out}", "runner.progress=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert (out / "results.jsonl").is_file(), done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("runs")
    return run_capitals(base / "expert", "expert"), run_capitals(base / "novice", "novice")


def test_score_writes_scores_next_to_the_results(
    runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    expert, novice = runs
    results_before = (novice / "results.jsonl").read_bytes()
    assert main(["score", str(novice)]) == 0  # the task's own scorer: includes
    out = capsys.readouterr().out
    assert "includes: 0.245" in out and "n=49" in out and "1 unscored" in out
    rows = [json.loads(line) for line in (novice / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 50
    peru = next(r for r in rows if r["id"] == "capital-peru")["scores"]["includes"]
    assert peru["value"] is None and "model call failed" in peru["error"]
    summary = json.loads((novice / "scores.json").read_text())["includes"]
    assert (
        summary["n"] == 49
        and summary["unscored"] == 1
        and summary["ci_low"] < summary["mean"] < summary["ci_high"]
    )
    assert (novice / "results.jsonl").read_bytes() == results_before  # the replies are never touched

    # a second scorer adds its column, the first one stays
    assert main(["score", str(novice), "scorer=pattern", r"scorer.pattern=It is (\w+)"]) == 0
    assert set(read_scores(novice)) == {"includes", "pattern"}

    done = rescore_run(expert)
    assert done.summaries["includes"].mean == 1.0


def test_compare_two_runs_says_which_is_better(
    runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    expert, novice = runs
    for run in runs:
        rescore_run(run, ["includes"])
    assert main(["compare", str(expert), str(novice)]) == 0
    out = capsys.readouterr().out
    assert "[includes]" in out and "A scores higher than B" in out and "significant at 0.05" in out
    assert "McNemar chi2" in out and "n=49" in out


def test_compare_needs_scores(
    tmp_path: Path, runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "results.jsonl").write_text(json.dumps({"id": "x", "content": "Paris", "error": None}) + "\n")
    assert main(["compare", str(bare), str(runs[0])]) == 2
    assert "modelfactory score" in capsys.readouterr().err


def test_bad_scorer_arguments_name_the_key(
    runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["score", str(runs[0]), "scorer=includs"]) == 2
    assert "scorer.name: unknown scorer 'includs'" in capsys.readouterr().err
    assert main(["score", str(runs[0]), "scorer=pattern", "scorer.pattern=(x"]) == 2
    assert "scorer.pattern: regex '(x' does not compile" in capsys.readouterr().err
    assert main(["score", str(runs[0]), "scorer.ignore_case=false"]) == 2
    with pytest.raises(ConfigError, match="judge"):
        rescore_run(runs[0], ["model_graded"])


def test_a_relative_dataset_path_is_read_from_where_the_run_was_launched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "qa.jsonl").write_text(
        json.dumps({"id": "q1", "prompt": "2+2?", "target": "4"}) + "\n"
    )
    run = project / "outputs" / "run1"
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "model=custom_callable", "model.fn=tests.eval.capital_answers.expert",
         "task=dataset", "task.path=data/qa.jsonl", f"hydra.run.dir={run}", "runner.progress=false"],
        cwd=project, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert (run / "results.jsonl").is_file(), done.stderr[-3000:]
    monkeypatch.chdir(tmp_path)  # scored from elsewhere: data/qa.jsonl is not here
    assert rescore_run(run, ["numeric"]).summaries["numeric"].n == 1
