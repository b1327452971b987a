"""The per-job numbers trackers and report.html show, read back from a job dir written by hand."""

from __future__ import annotations

import json
from pathlib import Path

from modelfactory.job.record import percentile
from modelfactory.jobmetrics import job_metrics


def _write(job: Path, rows: list[dict[str, object]], info: dict[str, object] | None) -> None:
    job.mkdir(parents=True, exist_ok=True)
    (job / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"id": "torn", "cont')
    if info is not None:
        (job / "job.json").write_text(json.dumps(info))


def _row(item: str, latency: float, cost: float | None = None, error: bool = False) -> dict[str, object]:
    usage = None if error else {"input_tokens": 4, "output_tokens": 6}
    row: dict[str, object] = {"id": item, "content": "x", "usage": usage, "latency_s": latency}
    row["error"] = {"type": "E", "message": "m"} if error else None
    if cost is not None:
        row["cost_usd"] = cost
    return row


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0 and percentile([3.0, 1.0, 2.0, 4.0], 95) == 4.0
    assert percentile([7.0], 50) == 7.0


def test_metrics_of_a_resumed_job_count_each_item_once(tmp_path: Path) -> None:
    rows = [_row("a", 0.1, 0.01), _row("b", 9.0, error=True), _row("c", 0.3, 0.02), _row("b", 0.2, 0.03)]
    _write(tmp_path, rows, {"elapsed_s": 2.0, "runs": 2})
    m = job_metrics(tmp_path)
    assert m["ok"] == 3 and m["failed"] == 0 and m["error_rate"] == 0  # b's newest row is a success
    assert m["p50_latency_s"] == 0.2 and m["p95_latency_s"] == 0.3 and m["mean_latency_s"] == 0.2
    assert m["tokens_in"] == 12 and m["tokens_out"] == 18
    assert m["items_per_s"] == 1.5 and m["out_tokens_per_s"] == 9.0
    assert m["cost_usd"] == 0.06  # summed from the rows


def test_cost_from_the_job_record_wins_and_no_price_is_none_not_zero(tmp_path: Path) -> None:
    _write(tmp_path / "priced", [_row("a", 0.1, 0.01)], {"elapsed_s": 1.0, "cost_usd": 0.5})
    assert job_metrics(tmp_path / "priced")["cost_usd"] == 0.5
    _write(tmp_path / "unpriced", [_row("a", 0.1), _row("b", 0.1, error=True)], None)
    m = job_metrics(tmp_path / "unpriced")
    assert m["cost_usd"] is None and m["error_rate"] == 0.5
    assert m["elapsed_s"] is None and m["items_per_s"] is None  # no job.json: no wall time to divide by
