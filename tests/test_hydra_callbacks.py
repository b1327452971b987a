"""The sweep summary (summary.csv / summary.md) of a scored sweep: one column group per scorer, read from
the jobs' ``job.json`` (the runner) or ``scores.json`` (``modelfactory score``), and the table of a sweep
without scorers unchanged."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from modelfactory.eval.rescore import rescore_run
from modelfactory.hydra_callbacks import FIXED_COLUMNS, METRIC_COLUMNS, summarize_sweep
from modelfactory.jobmetrics import job_scores
from tests.scored_sweep import scored_job, scored_sweep, write_items

SCORE_COLUMNS = [
    *("includes", "includes_stderr", "includes_ci", "includes_n"),
    *("exact", "exact_stderr", "exact_ci", "exact_n"),
    "unscored",
]


def _csv(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "summary.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_summary_has_a_column_group_per_scorer(tmp_path: Path) -> None:
    sweep = scored_sweep(tmp_path)
    table = summarize_sweep(sweep)
    header = (sweep / "summary.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == FIXED_COLUMNS + ["task"] + METRIC_COLUMNS[:-1] + SCORE_COLUMNS + ["error"]
    good, bad = _csv(sweep)
    # good: includes 3/3; exact 2/3 ("It is Tokyo." is not exactly "Tokyo")
    assert (good["includes"], good["includes_ci"], good["includes_n"]) == ("1.0", "1.0–1.0", "3")
    assert (good["exact"], good["exact_stderr"], good["exact_n"], good["unscored"]) == (
        "0.6667",
        "0.3333",
        "3",
        "0",
    )
    # bad: one right, one wrong, one failed call: the failure is unscored, not a zero
    assert (bad["includes"], bad["includes_n"], bad["unscored"]) == ("0.5", "2", "1")
    assert good["cost_usd"] == "0.006" and bad["cost_usd"] == "unknown"
    assert "judge_cost_usd" not in header  # no judge ran
    assert "| 0 | good | dataset |" in table and "| 1.0 | 0.0 | 1.0–1.0 | 3 |" in table
    assert table == (sweep / "summary.md").read_text(encoding="utf-8").split("\n\n", 1)[1]


def test_a_sweep_without_scores_keeps_its_columns(tmp_path: Path) -> None:
    items = write_items(tmp_path / "items.jsonl")
    sweep = tmp_path / "sweep"
    scored_job(sweep, 0, "a", {"fr": "Paris"}, items, with_job_scores=False)
    for row_file in sweep.glob("*/results.jsonl"):  # rows as a run without scorers writes them
        rows = [json.loads(line) for line in row_file.read_text().splitlines()]
        row_file.write_text(
            "".join(json.dumps({k: v for k, v in r.items() if k != "scores"}) + "\n" for r in rows)
        )
    summarize_sweep(sweep)
    header = (sweep / "summary.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == FIXED_COLUMNS + ["task"] + METRIC_COLUMNS
    assert job_scores(sweep / "0") == ({}, None)


def test_a_sweep_scored_afterwards_shows_the_same_numbers(tmp_path: Path) -> None:
    """``modelfactory score`` on each job (scores.json) gives the summary the runner's job.json gives."""
    runner = scored_sweep(tmp_path / "runner")
    summarize_sweep(runner)
    items = write_items(tmp_path / "later" / "items.jsonl")
    later = tmp_path / "later" / "sweep"
    scored_job(
        later,
        0,
        "good",
        {"fr": "Paris", "jp": "It is Tokyo.", "it": "Rome"},
        items,
        cost=0.002,
        with_job_scores=False,
    )
    scored_job(
        later,
        1,
        "bad",
        {"fr": "Paris", "jp": "<script>alert(1)</script>", "it": None},
        items,
        with_job_scores=False,
    )
    for job in (later / "0", later / "1"):
        assert job_scores(job) == ({}, None)
        rescore_run(job, workers=1)
    summarize_sweep(later)
    assert [{k: r[k] for k in SCORE_COLUMNS} for r in _csv(later)] == [
        {k: r[k] for k in SCORE_COLUMNS} for r in _csv(runner)
    ]


def test_a_judge_cost_is_its_own_column(tmp_path: Path) -> None:
    sweep = scored_sweep(tmp_path)
    rows_file = sweep / "0" / "results.jsonl"
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    for row in rows:  # as the model_graded scorer records what its judge calls cost
        row["scores"]["exact"]["metadata"] = {"judge_cost_usd": 0.0005}
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summarize_sweep(sweep)
    good, bad = _csv(sweep)
    assert (good["cost_usd"], good["judge_cost_usd"]) == ("0.006", "0.0015")
    assert bad["judge_cost_usd"] == ""  # no judge priced: empty, not 0
    assert job_scores(sweep / "0")[1] == 0.0015
