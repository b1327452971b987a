"""Cost on every row and in the job record, and ``runner.max_cost_usd`` stopping a job, against the
recording server on 127.0.0.1 (it answers every call with 5 prompt and 7 completion tokens)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from modelfactory import build_model, run_items
from modelfactory.errors import ConfigError
from modelfactory.job import app
from tests.servers.recording import RecordingServer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.server

# $1,000 / $2,000 per million tokens: one call (5 in, 7 out) = 5 x 0.001 + 7 x 0.002 = $0.019
PRICE = "{input: 1000, output: 2000}"
PER_CALL = 0.019


def _dataset(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"q{i}"}) + "\n" for i in range(n)))
    return path


def _cfg(server: RecordingServer, data: Path, *extra: str) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "modelfactory" / "conf")):
        return compose(
            config_name="config",
            overrides=[
                "model=local_server",
                f"model.api_base={server.url}/v1",
                "++model.model_id=test-model",  # unknown to tiktoken and the price map: chars/4, our price
                f"++model.price={PRICE}",
                "task=dataset",
                f"task.path={data}",
                "runner.progress=false",
                "generation.max_tokens=7",
                *extra,
            ],
        )


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_cost_on_rows_and_job(tmp_path: Path) -> None:
    with RecordingServer() as server:
        assert app.run_job(_cfg(server, _dataset(tmp_path, 3)), tmp_path / "out") == 0
    rows = _rows(tmp_path / "out")
    assert [r["cost_usd"] for r in rows] == [pytest.approx(PER_CALL)] * 3
    job = json.loads((tmp_path / "out" / "job.json").read_text())
    assert job["cost_usd"] == pytest.approx(3 * PER_CALL)
    assert job["price"] == {
        "input": 1000.0,
        "output": 2000.0,
        "cached_input": None,
        "cache_write_input": None,
        "batch_discount": 0.5,
    }
    assert "budget" not in job


def test_budget_stops_the_job(tmp_path: Path) -> None:
    # chars/4: "q0" is 1 token, max_tokens 7: each call is estimated at 0.001 + 0.014 = $0.015.
    # $0.05 admits call 1 (0.015), call 2 (0.019 spent + 0.015), refuses call 3 (0.038 + 0.015 > 0.05).
    out = tmp_path / "out"
    with RecordingServer() as server:
        cfg = _cfg(server, _dataset(tmp_path, 10), "runner.max_cost_usd=0.05", "runner.concurrency=1")
        assert app.run_job(cfg, out) == 3
        assert len(server.requests) == 2
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["q0", "q1"]
    job = json.loads((out / "job.json").read_text())
    assert job["budget"]["stopped"] is True
    assert "runner.max_cost_usd=0.05" in job["budget"]["reason"] and "'q2'" in job["budget"]["reason"]
    assert job["budget"]["spent_usd"] == pytest.approx(2 * PER_CALL)
    assert job["error"]["type"] == "BudgetExceeded"
    assert job["cost_usd"] == pytest.approx(2 * PER_CALL)

    # A bigger budget resumes: the two paid items are not asked again.
    with RecordingServer() as server:
        cfg = _cfg(server, _dataset(tmp_path, 10), "runner.max_cost_usd=10", "runner.concurrency=1")
        assert app.run_job(cfg, out) == 0
        assert len(server.requests) == 8
    assert json.loads((out / "job.json").read_text())["cost_usd"] == pytest.approx(10 * PER_CALL)


def _priced_model(server: RecordingServer) -> Any:
    """An OpenAI-compatible model on the recording server, priced so that one call costs PER_CALL."""
    return build_model(
        {
            "_target_": "modelfactory.OpenAIServerModel",
            "model_id": "test-model",
            "api_base": f"{server.url}/v1",
            "api_key": "sk-test",
            "price": {"input": 1000, "output": 2000},
        }
    )


def test_budget_counts_calls_in_flight(recording_server: RecordingServer) -> None:
    model = _priced_model(recording_server)
    items = [{"id": f"q{i}", "prompt": f"q{i}"} for i in range(20)]
    # 4 at once, each estimated at $0.015: only 3 fit in $0.05 before any has finished.
    stats = run_items(model, items, concurrency=4, progress=False, max_cost_usd=0.05, max_tokens=7)
    assert stats.budget is not None and stats.budget.reason is not None
    assert stats.ok == len(recording_server.requests) == 3
    assert stats.cost_usd == pytest.approx(3 * PER_CALL)


def test_a_resumed_runs_stats_carry_the_earlier_rows_cost(
    recording_server: RecordingServer, tmp_path: Path
) -> None:
    """The stats of a resumed run price every item's newest row (the skipped ones' from the file the
    resume reads anyway), and keep_rows hands the rows over, the earlier ones first."""
    model = _priced_model(recording_server)
    items = [{"id": f"q{i}", "prompt": f"q{i}"} for i in range(3)]
    path = tmp_path / "results.jsonl"
    first = run_items(model, items[:2], results_path=path, progress=False, max_tokens=7)
    assert first.earlier_cost_usd is None and first.job_cost_usd == pytest.approx(2 * PER_CALL)
    assert first.rows == []  # a results file holds them
    again = run_items(model, items, results_path=path, progress=False, keep_rows=True, max_tokens=7)
    assert (again.skipped, again.ok, len(recording_server.requests)) == (2, 1, 3)
    assert again.cost_usd == pytest.approx(PER_CALL)
    assert again.earlier_cost_usd == pytest.approx(2 * PER_CALL)
    assert again.job_cost_usd == pytest.approx(3 * PER_CALL)
    assert again.to_dict()["earlier_cost_usd"] == pytest.approx(2 * PER_CALL)
    assert [r["id"] for r in again.rows] == ["q0", "q1", "q2"]


def test_budget_without_a_price_is_a_config_error() -> None:
    model = build_model(
        {"_target_": "modelfactory.CallableModel", "fn": "examples.custom_model.custom_model"}
    )
    with pytest.raises(ConfigError, match="runner.max_cost_usd"):
        run_items(model, [{"id": "a", "prompt": "x"}], progress=False, max_cost_usd=1.0)


def test_local_model_cost_is_unknown_not_zero(tmp_path: Path) -> None:
    model = build_model(
        {"_target_": "modelfactory.CallableModel", "fn": "examples.custom_model.custom_model"}
    )
    stats = run_items(model, [{"id": "a", "prompt": "x"}], progress=False)
    assert stats.cost_usd is None and stats.rows[0]["cost_usd"] is None


def test_cache_hits_cost_nothing_and_budgets_let_them_through(tmp_path: Path) -> None:
    """A reply served from the response cache was not billed: cost_usd 0 with ``cached: true``, the job's
    total counts it as 0, and a budget too small for one call still lets every cache hit through."""
    cache = f"{{mode: read_write, path: {tmp_path / 'cache.sqlite'}}}"
    data = _dataset(tmp_path, 3)
    with RecordingServer() as server:
        assert app.run_job(_cfg(server, data, f"++model.cache={cache}"), tmp_path / "paid") == 0
        assert len(server.requests) == 3
        assert json.loads((tmp_path / "paid" / "job.json").read_text())["cost_usd"] == pytest.approx(
            3 * PER_CALL
        )
        # the same items again: every one a cache hit, under a budget ($0.001) below one call's estimate
        cfg = _cfg(server, data, f"++model.cache={cache}", "runner.max_cost_usd=0.001")
        assert app.run_job(cfg, tmp_path / "cached") == 0
        assert len(server.requests) == 3  # nothing sent
    rows = _rows(tmp_path / "cached")
    assert [(r["cached"], r["cost_usd"], r["error"]) for r in rows] == [(True, 0.0, None)] * 3
    assert "cached" not in _rows(tmp_path / "paid")[0]
    job = json.loads((tmp_path / "cached" / "job.json").read_text())
    assert job["cost_usd"] == 0.0 and job["error"] is None
    assert job["budget"] == {"max_cost_usd": 0.001, "spent_usd": 0.0, "stopped": False, "reason": None}
