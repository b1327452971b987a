"""Sharding (``task.shards`` / ``task.shard``), the merged sweep summary and ``modelfactory merge``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from modelfactory.cli import main as cli_main
from modelfactory.errors import ConfigError
from modelfactory.hydra_callbacks import summarize_sweep
from modelfactory.job.items import Item, load_dataset, shard_items, shard_of, task_items
from modelfactory.merge import merge_sweep
from tests.test_sweeps import ROOT, summary_rows, sweep

DATASET = ROOT / "examples" / "dataset.jsonl"


def _items(n: int, start: int = 0) -> list[Item]:
    return [Item(id=f"q{i}", messages=[{"role": "user", "content": str(i)}]) for i in range(start, n)]


def test_shards_split_the_items_once_and_stay_put_when_items_are_added() -> None:
    items = _items(1000)
    shards = [shard_items(items, 8, i) for i in range(8)]
    ids = [it.id for part in shards for it in part]
    assert sorted(ids) == sorted(it.id for it in items)  # every item in exactly one shard
    assert all(60 <= len(part) <= 190 for part in shards)  # the hash spreads them (1000/8 = 125)
    assert all(part == [it for it in items if it in part] for part in shards)  # dataset order kept
    grown = _items(1000) + _items(1500, 1000)
    for i in range(8):  # adding 500 items moves none of the first 1000
        assert [it.id for it in shard_items(grown, 8, i)][: len(shards[i])] == [it.id for it in shards[i]]
    assert shard_of("q1", 8) == shard_of("q1", 8) and shard_items(items, 1, 0) == items


@pytest.mark.parametrize(
    ("shards", "shard", "key"), [(8, 8, "task.shard"), (1, 3, "task.shard"), (0, 0, "task.shards")]
)
def test_a_bad_shard_names_the_key_and_the_fix(shards: int, shard: int, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        shard_items(_items(3), shards, shard)
    assert info.value.problems[0].key == key
    assert "task.shards" in info.value.problems[0].fix


def test_task_items_applies_the_limit_then_the_shard() -> None:
    cfg = OmegaConf.create({"task": {"type": "dataset", "path": str(DATASET), "limit": 10, "shards": 3}})
    parts = [task_items(OmegaConf.merge(cfg, {"task": {"shard": i}})) for i in range(3)]
    assert sorted(it.id for p in parts for it in p) == sorted(it.id for it in load_dataset(DATASET)[:10])


@pytest.mark.slow
def test_a_sharded_sweep_is_one_row_and_merges_into_one_results_file(tmp_path: Path) -> None:
    """Shards 0..2 of 3 plus a bad shard 5: one row per parameter set that names the failed shard;
    `modelfactory merge` writes every item once; a lost shard directory is reported as missing."""
    proc = sweep(
        tmp_path,
        "-m",
        "model=custom_callable",
        "task=dataset",
        "task.shards=3",
        "task.shard=0,1,2,5",
        "generation.temperature=0,0.5",
    )
    assert proc.returncode == 0, proc.stderr
    rows = summary_rows(tmp_path)
    assert [(r["generation.temperature"], r["task.shard"], r["ok"]) for r in rows] == [
        ("0", "3/3", "12"),  # all 3 shards done; the stray shard 5 is reported in `error`
        ("0.5", "3/3", "12"),
    ]
    assert all("shard 5 failed: ConfigError" in r["error"] and "task.shard" in r["error"] for r in rows)
    assert rows[0]["job"] == "0,2,4,6"  # the basic launcher runs shard x temperature in this order

    assert cli_main(["merge", str(tmp_path)]) == 1  # incomplete: shard 5 failed
    merged_dirs = sorted((tmp_path / "merged").iterdir())
    assert len(merged_dirs) == 2
    dataset_ids = sorted(it.id for it in load_dataset(DATASET))
    for folder in merged_dirs:
        lines = (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()
        assert sorted(json.loads(line)["id"] for line in lines) == dataset_ids
        record = json.loads((folder / "merged.json").read_text(encoding="utf-8"))
        assert record["complete"] is False and record["items"] == 12 and record["ok"] == 12
        assert record["p50_latency_s"] <= record["p95_latency_s"] and record["cost_usd"] is None  # unpriced

    for job in ("6", "7"):  # drop the bad shard's jobs: the sets are whole again
        shutil.rmtree(tmp_path / job)
    shutil.rmtree(tmp_path / "merged")
    assert cli_main(["merge", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*/results.jsonl"))) == 2

    shutil.rmtree(tmp_path / "2")  # shard 1 of temperature 0 lost (a node died with its disk)
    summarize_sweep(tmp_path)
    first, second = summary_rows(tmp_path)
    assert first["error"] == "missing shard(s) 1 of 3" and first["task.shard"] == "2/3"
    assert int(first["ok"]) < 12 and second["error"] == "" and second["ok"] == "12"


def _shard_job(root: Path, num: int, shard: int, rows: list[dict[str, object]], cost: float | None) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- model=m\n- task.shards=2\n- task.shard={shard}\n")
    record = {"model": "m", "results_file": "results.jsonl", "elapsed_s": 2.0, "error": None}
    record["shard"] = {"index": shard, "count": 2}
    if cost is not None:
        record["cost_usd"] = cost
    (job / "job.json").write_text(json.dumps(record))
    (job / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_merged_metrics_are_recomputed_over_all_shards_rows(tmp_path: Path) -> None:
    """Percentiles over the union of rows (not an average of the shards'), tokens and cost summed."""
    usage = {"input_tokens": 3, "output_tokens": 5}
    fast = [
        {"id": f"a{i}", "content": "x", "usage": usage, "latency_s": 0.1, "error": None} for i in range(9)
    ]
    slow = [{"id": "b0", "content": "x", "usage": usage, "latency_s": 5.0, "error": None}]
    failed = [
        {"id": "b1", "content": None, "usage": None, "latency_s": 1.0, "error": {"type": "E", "message": "m"}}
    ]
    _shard_job(tmp_path, 0, 0, fast, 0.25)
    _shard_job(tmp_path, 1, 1, slow + failed, 0.5)
    summarize_sweep(tmp_path)
    (row,) = summary_rows(tmp_path)
    assert (row["job"], row["task.shard"], row["ok"], row["failed"]) == ("0,1", "2/2", "10", "1")
    assert row["p95_latency_s"] == "5.0" and row["tokens_out"] == "50" and row["elapsed_s"] == "4.0"
    (merged,) = merge_sweep(tmp_path)
    assert merged.complete and merged.path is not None
    record = json.loads((merged.path / "merged.json").read_text())
    assert record["p50_latency_s"] == 0.1 and record["cost_usd"] == 0.75 and record["items"] == 11


def _scored_shard(
    root: Path, num: int, shard: int, values: list[float | None], task: dict[str, object]
) -> None:
    """Shard ``shard`` of 2, its rows scored as the runner writes them (``includes``: 1/0, None: the call
    failed), job.json with the shard's own summary; ids from ``task`` epochs when it has them."""
    from modelfactory.eval.metrics import summarize

    epochs = int(task.get("epochs", 1))  # type: ignore[call-overload]
    rows: list[dict[str, object]] = []
    for i, value in enumerate(values):
        item_id = f"s{shard}q{i // epochs}" + (f"#{i % epochs}" if epochs > 1 else "")
        score = {
            "value": value,
            "answer": None,
            "explanation": "",
            "error": None if value is not None else "x",
        }
        row = {
            "id": item_id,
            "content": "x",
            "usage": {"input_tokens": 1, "output_tokens": 1},
            "latency_s": 0.1,
        }
        row["error"] = None if value is not None else {"type": "E", "message": "down"}
        row["scores"] = {"includes": score}
        if epochs > 1:
            row.update(item_id=item_id.split("#")[0], epoch=i % epochs)
        rows.append(row)
    _shard_job(root, num, shard, rows, None)
    (root / str(num) / ".hydra" / "config.yaml").write_text(json.dumps({"task": task}))
    record = json.loads((root / str(num) / "job.json").read_text())
    record["scores"] = {"includes": summarize(values).to_dict()}  # the shard's own (epochs aside)
    (root / str(num) / "job.json").write_text(json.dumps(record))


def test_a_sharded_scored_set_shows_its_scores_computed_over_all_shards_rows(tmp_path: Path) -> None:
    """Shards of unequal size (3 right; 1 wrong + 1 failed call): the merged row's mean is 3/4 over the
    4 scored rows (the mean of the shards' means would be 0.5), with n, stderr and the bootstrap CI of
    all of them, in summary.csv/md, merged.json and report.html."""
    from modelfactory.eval.metrics import summarize
    from modelfactory.report import report_jobs, write_report

    task = {"type": "dataset", "path": "items.jsonl", "shards": 2, "scorers": [{"name": "includes"}]}
    _scored_shard(tmp_path, 0, 0, [1.0, 1.0, 1.0], task)
    _scored_shard(tmp_path, 1, 1, [0.0, None], task)
    expected = summarize([1.0, 1.0, 1.0, 0.0, None])
    assert expected.mean == 0.75 and expected.n == 4
    table = summarize_sweep(tmp_path)
    (row,) = summary_rows(tmp_path)
    assert (row["task.shard"], row["includes"], row["includes_n"], row["unscored"]) == (
        "2/2",
        "0.75",
        "4",
        "1",
    )
    assert row["includes_stderr"] == str(round(expected.stderr or 0, 4))
    assert row["includes_ci"] == f"{round(expected.ci_low or 0, 4)}–{round(expected.ci_high or 0, 4)}"
    assert "| 0.75 |" in table

    (merged,) = merge_sweep(tmp_path)
    assert merged.path is not None
    record = json.loads((merged.path / "merged.json").read_text())
    assert record["scores"]["includes"] == expected.to_dict()

    (job,) = report_jobs(tmp_path)
    assert (job["score:includes"], job["score:includes:n"], job["unscored"]) == (0.75, 4, 1)
    page = write_report(tmp_path).read_text()
    samples = page[page.index("<h2>Samples</h2>") :]
    assert samples.count("<tr>") == 1 + 5  # every shard's item, one column for the set
    assert page.count("<tr>") - samples.count("<tr>") == 1 + 1  # the summary: one row for the set


def test_merged_epochs_are_reduced_per_item_across_shards_rows(tmp_path: Path) -> None:
    """task.epochs=2, epochs_reducer=max: each item's epochs reduced first, then summarized over items."""
    from modelfactory.eval.metrics import summarize

    task = {"type": "dataset", "path": "items.jsonl", "shards": 2, "epochs": 2, "epochs_reducer": "max"}
    task["scorers"] = [{"name": "includes"}]
    _scored_shard(tmp_path, 0, 0, [1.0, 0.0, 0.0, 0.0], task)  # item s0q0: max 1; s0q1: 0
    _scored_shard(tmp_path, 1, 1, [0.0, 1.0], task)  # s1q0: max 1
    summarize_sweep(tmp_path)
    (row,) = summary_rows(tmp_path)
    expected = summarize([1.0, 0.0, 1.0])
    assert (row["includes"], row["includes_n"]) == (str(round(expected.mean or 0, 4)), "3")


@pytest.mark.slow
def test_a_sharded_scored_sweep_summarizes_as_the_unsharded_run(tmp_path: Path) -> None:
    """task=capitals in 3 shards vs in one job, the same answers: the same mean, stderr, CI and n."""
    answers = ["model=custom_callable", "model.fn=tests.eval.capital_answers.novice", "task=capitals"]
    proc = sweep(tmp_path / "sharded", "-m", *answers, "task.shards=3", "task.shard=0,1,2")
    assert proc.returncode == 0, proc.stderr
    proc = sweep(tmp_path / "whole", "-m", *answers, "task.shards=1")
    assert proc.returncode == 0, proc.stderr
    (sharded,) = summary_rows(tmp_path / "sharded")
    (whole,) = summary_rows(tmp_path / "whole")
    keys = ["includes", "includes_stderr", "includes_ci", "includes_n", "unscored", "ok", "failed"]
    assert sharded["task.shard"] == "3/3" and sharded["includes_n"] == "49"
    assert [sharded[k] for k in keys] == [whole[k] for k in keys]
