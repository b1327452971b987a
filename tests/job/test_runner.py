"""modelfactory.job.runner: concurrency, batches, results.jsonl, resume, redaction, progress."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from modelfactory import ChatMessage, ConfigError, OpenAIServerModel, TokenUsage
from modelfactory.job.items import Item
from modelfactory.job.record import aggregate_rows, read_results
from modelfactory.job.runner import run_items
from tests.servers.recording import RecordingServer
from tests.timing import meet, together

ROOT = Path(__file__).resolve().parents[2]


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def items(n: int, prefix: str = "i") -> list[Item]:
    return [Item(id=f"{prefix}{k}", messages=[{"role": "user", "content": f"q{k}"}]) for k in range(n)]


class FakeModel:
    """A thread-safe fake API model: records concurrency (and the threads it ran on), fails the items named
    in ``fail``; with ``overlap=n`` each call waits until n calls are inside at once."""

    def __init__(self, overlap: int = 0, fail: set[str] | None = None, secret: str | None = None) -> None:
        self.gate = together(overlap) if overlap else None
        self.fail = fail or set()
        self.secret = secret
        self.calls: list[str] = []
        self.kwargs: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict[str, Any]], **kwargs: Any) -> ChatMessage:
        text = messages[-1]["content"]
        with self._lock:
            self.calls.append(text)
            self.kwargs.append(kwargs)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.threads.add(threading.get_ident())
        try:
            meet(self.gate)
            if text in self.fail:
                raise RuntimeError(f"boom on {text} with key {self.secret}")
            return ChatMessage(
                content=f"re: {text} {self.secret or ''}".strip(), token_usage=TokenUsage(3, 2)
            )
        finally:
            with self._lock:
                self.in_flight -= 1

    def redact(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text


# ------------------------------------------------------------------------------------------ running


def test_threads_run_concurrently_and_write_every_row(tmp_path: Path) -> None:
    model = FakeModel(overlap=8)  # each call is held until 8 are in: only 8 at once gets through
    out = tmp_path / "results.jsonl"
    stats = run_items(model, items(40), concurrency=8, results_path=out, progress=False, temperature=0.3)
    assert stats.mode == "threads" and stats.ok == 40 and stats.failed == 0
    assert model.max_in_flight == 8 and len(model.threads) == 8
    rows = rows_of(out)
    assert sorted(r["id"] for r in rows) == sorted(f"i{k}" for k in range(40))
    assert all(r["usage"] == {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5} for r in rows)
    assert all(k == {"temperature": 0.3} for k in model.kwargs)
    assert stats.output_tokens == 80 and stats.p95_latency_s is not None


def test_failing_item_records_an_error_and_the_run_goes_on(tmp_path: Path) -> None:
    model = FakeModel(fail={"q3"})
    out = tmp_path / "r.jsonl"
    stats = run_items(model, items(6), concurrency=3, results_path=out, progress=False)
    assert stats.ok == 5 and stats.failed == 1
    bad = read_results(out)["i3"]
    assert bad["content"] is None and bad["error"]["type"] == "RuntimeError"
    assert "boom on q3" in bad["error"]["message"]


def test_resume_skips_done_items_and_retries_errors(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    first = FakeModel(fail={"q1", "q4"})
    run_items(first, items(6), concurrency=2, results_path=out, progress=False)
    keep = FakeModel()
    stats = run_items(keep, items(6), results_path=out, progress=False, retry_errors=False)
    assert keep.calls == [] and stats.skipped == 6
    again = FakeModel()
    stats = run_items(again, items(6), concurrency=2, results_path=out, progress=False)
    assert sorted(again.calls) == ["q1", "q4"] and stats.skipped == 4 and stats.ok == 2
    latest = read_results(out)
    assert len(latest) == 6 and not any(r["error"] for r in latest.values())
    assert len(rows_of(out)) == 8  # 6 first rows + 2 retries; the newest row of an id wins
    assert aggregate_rows(latest.values())["ok"] == 6


def test_interrupted_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"

    class Interrupting(FakeModel):
        def __call__(self, messages: list[dict[str, Any]], **kwargs: Any) -> ChatMessage:
            if messages[-1]["content"] == "q5":
                raise KeyboardInterrupt
            # rows are on disk as soon as an item finishes, before the next one starts
            assert len(rows_of(out) if out.exists() else []) == len(self.calls)
            return super().__call__(messages, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        run_items(Interrupting(), items(10), concurrency=1, results_path=out, progress=False)
    assert [r["id"] for r in rows_of(out)] == [f"i{k}" for k in range(5)]
    with out.open("a", encoding="utf-8") as f:  # a torn last row, as a crash mid-write leaves it
        f.write('{"id": "i5", "content": "par')
    rest = FakeModel()
    stats = run_items(rest, items(10), concurrency=1, results_path=out, progress=False)
    assert rest.calls == [f"q{k}" for k in range(5, 10)] and stats.skipped == 5
    assert [r["id"] for r in rows_of(out)] == [f"i{k}" for k in range(10)]


class BatchModel(FakeModel):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.batches: list[int] = []

    def generate_batch(self, conversations: list[Any], **kwargs: Any) -> list[ChatMessage]:
        self.batches.append(len(conversations))
        if any(c[-1]["content"] in self.fail for c in conversations):
            raise RuntimeError("one bad item spoils the batch")
        return [
            ChatMessage(content=f"b: {c[-1]['content']}", token_usage=TokenUsage(1, 1)) for c in conversations
        ]


def test_local_model_batches_and_isolates_a_bad_item(tmp_path: Path) -> None:
    model = BatchModel(fail={"q5"})
    out = tmp_path / "r.jsonl"
    stats = run_items(model, items(10), local_batch_size=4, concurrency=16, results_path=out, progress=False)
    assert stats.mode == "batches" and model.batches == [4, 4, 2]
    assert model.calls == ["q4", "q5", "q6", "q7"]  # the failed batch, item by item
    rows = read_results(out)
    assert rows["i5"]["error"]["type"] == "RuntimeError"
    assert rows["i0"]["content"] == "b: q0" and stats.ok == 9 and stats.failed == 1


class RowErrorBatchModel(FakeModel):
    """Like TransformersModel.generate_batch: return_exceptions gives a bad row its exception."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.seen: list[dict[str, Any]] = []

    def generate_batch(
        self,
        conversations: list[Any],
        *,
        batch_size: int | None = None,
        return_exceptions: bool = False,
        **kw: Any,
    ) -> list[Any]:
        self.seen.append({"batch_size": batch_size, "return_exceptions": return_exceptions, **kw})
        return [
            ValueError("bad row") if c[-1]["content"] in self.fail else ChatMessage(content="ok")
            for c in conversations
        ]


def test_batch_rows_with_exceptions_are_recorded_without_a_rerun() -> None:
    model = RowErrorBatchModel(fail={"q1"})
    stats = run_items(
        model, items(3), local_batch_size=2, progress=False, stop_sequences=["\n"], temperature=0.0
    )
    assert model.calls == []  # no item-by-item fallback was needed
    assert model.seen[0] == {
        "batch_size": 2,
        "return_exceptions": True,
        "stop_sequences": ["\n"],
        "temperature": 0.0,
    }
    assert [r["error"]["type"] if r["error"] else "ok" for r in stats.rows] == ["ok", "ValueError", "ok"]


def test_local_model_without_batches_runs_sequentially(tmp_path: Path) -> None:
    model = FakeModel()
    model.is_local = True  # type: ignore[attr-defined]
    stats = run_items(model, items(6), concurrency=8, progress=False)
    assert stats.mode == "sequential" and model.max_in_flight == 1 and len(stats.rows) == 6
    assert model.threads == {threading.get_ident()}  # all on the caller's thread: nothing could overlap
    assert model.calls == [f"q{k}" for k in range(6)]  # in order


def test_secrets_are_masked_in_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_secret = "env-secret-value-9876"
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", env_secret)
    model = FakeModel(fail={"q1"}, secret="model-secret-1234")
    out = tmp_path / "r.jsonl"
    run_items(
        model,
        [*items(2), Item(id="echo", messages=[{"role": "user", "content": env_secret}])],
        results_path=out,
        progress=False,
    )
    text = out.read_text(encoding="utf-8")
    assert "model-secret-1234" not in text and env_secret not in text and "***" in text


def test_progress_bar_shows_errors_and_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    run_items(FakeModel(fail={"q0"}), items(3), progress=True, desc="bar")
    err = capsys.readouterr().err
    assert "bar" in err and "3/3" in err and "errors=1" in err and "tok_s=" in err


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        run_items(FakeModel(), items(2), concurrency=0)
    with pytest.raises(ConfigError, match="duplicate"):
        run_items(FakeModel(), items(2) + items(1), progress=False)
    stats = run_items(FakeModel(), [{"id": "d", "prompt": "from a dict"}], progress=False)
    assert stats.rows[0]["content"] == "re: from a dict"


@pytest.mark.server
def test_openai_model_against_a_slow_server_runs_16_at_once(tmp_path: Path) -> None:
    n = 32
    with RecordingServer() as server:
        model = OpenAIServerModel(model_id="m", api_base=f"{server.url}/v1")
        server.gate = together(16)  # requests are held until 16 are in: only 16 at once gets them through
        out = tmp_path / "r.jsonl"
        stats = run_items(model, items(n), concurrency=16, results_path=out, progress=False, max_tokens=5)
        assert len(server.requests) == n
    assert stats.ok == n and stats.failed == 0
    assert server.max_in_flight == 16
    rows = read_results(out)
    assert len(rows) == n and all(r["content"] == server.reply for r in rows.values())
    assert stats.input_tokens == 5 * n and stats.output_tokens == 7 * n


def test_rows_scored_in_a_pool_are_written_in_order_and_ctrl_c_loses_none(tmp_path: Path) -> None:
    """``score_workers=2`` (the code scorer's): the first rows score slowest, so the pool finishes them
    out of order; they are written in the order they came. Ctrl-C with scores still running: every row
    called so far is written (unscored where its score was not done) and a resume's finish scores them."""
    import time

    from modelfactory.job.scores import JobScores

    todo = [Item(f"i{k}", [{"role": "user", "content": f"q{k}"}], target="x") for k in range(10)]
    scores = JobScores.from_task({"scorers": [{"name": "includes"}]}, todo)
    assert scores is not None and scores.workers == 1  # string scorers: inline
    code = JobScores.from_task({"scorers": [{"name": "code"}]}, todo)
    assert code is not None and code.workers == 2
    scored_by: set[str] = set()

    def slow(row: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.01 * (10 - int(row["id"][1:])))  # i0 the slowest
        scored_by.add(threading.current_thread().name)
        return scores(row)

    out = tmp_path / "r.jsonl"
    run_items(FakeModel(), todo, concurrency=1, results_path=out, progress=False, score=slow, score_workers=2)
    rows = rows_of(out)
    assert [r["id"] for r in rows] == [f"i{k}" for k in range(10)]
    assert all(r["scores"]["includes"]["value"] is not None for r in rows)
    assert len(scored_by) == 2 and all(n.startswith("modelfactory-score") for n in scored_by)

    class Interrupting(FakeModel):
        def __call__(self, messages: list[dict[str, Any]], **kwargs: Any) -> ChatMessage:
            if messages[-1]["content"] == "q6":
                raise KeyboardInterrupt
            return super().__call__(messages, **kwargs)

    def slower(row: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.3)
        return scores(row)

    out = tmp_path / "again.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_items(Interrupting(), todo, concurrency=1, results_path=out, progress=False, score=slower,
                  score_workers=2)  # fmt: skip
    rows = rows_of(out)
    assert [r["id"] for r in rows] == [f"i{k}" for k in range(6)]  # every called item, in order
    assert any("scores" not in r for r in rows)  # its score was still running: written unscored
    rest = FakeModel()
    run_items(rest, todo, concurrency=1, results_path=out, progress=False, score=scores, score_workers=2)
    assert rest.calls == [f"q{k}" for k in range(6, 10)]  # nothing called twice
    scores.finish(out, fsync=False)
    assert all("includes" in r["scores"] for r in read_results(out).values())
