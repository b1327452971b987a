"""The response cache: read_write records, replay answers offline (and fails clearly on a miss)."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from modelfactory import CallableModel, ChatMessage, ConfigError, TokenUsage
from modelfactory.backends.openai import OpenAIServerModel
from modelfactory.cache import CacheSpec, ResponseCache, get_store, request_key
from modelfactory.errors import CacheMissError, ModelFactoryError
from tests.servers.recording import RecordingServer

ROOT = Path(__file__).resolve().parents[1]
MSGS = [{"role": "user", "content": "Say hello"}]


def api_model(srv: RecordingServer, path: Path, mode: str, **kw: Any) -> OpenAIServerModel:
    kw.setdefault("api_key", "sk-test-key-one")
    return OpenAIServerModel(
        model_id="served-model",
        api_base=f"{srv.url}/v1",
        max_retries=0,
        cache={"mode": mode, "path": str(path)},
        **kw,
    )


def rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])


# ------------------------------------------------------------------------ record, then replay


def test_read_write_then_replay_sends_no_request(recording_server: RecordingServer, tmp_path: Path) -> None:
    db = tmp_path / "cache.sqlite"
    first = api_model(recording_server, db, "read_write").generate(MSGS, temperature=0.0)
    assert len(recording_server.requests) == 1
    assert first.content == "Hello from the recording server"
    assert first.token_usage is not None and first.token_usage.total_tokens == 12

    again = api_model(recording_server, db, "read_write").generate(MSGS, temperature=0.0)
    replayed = api_model(recording_server, db, "replay").generate(MSGS, temperature=0.0)
    assert len(recording_server.requests) == 1  # both answered from the file
    for reply in (again, replayed):
        assert reply.content == first.content
        assert reply.token_usage == first.token_usage
        assert reply.raw["cache"] == "hit" and len(reply.raw["key"]) == 64
    assert rows(db) == 1


def test_a_hit_skips_the_retry_policy_and_the_rate_limit(
    recording_server: RecordingServer, tmp_path: Path
) -> None:
    db = tmp_path / "c.sqlite"
    api_model(recording_server, db, "read_write").generate(MSGS)
    model = api_model(recording_server, db, "replay", requests_per_minute=0.001)  # one token, then hours
    for _ in range(5):
        assert model.generate(MSGS).content == "Hello from the recording server"
    recording_server.enqueue(status=500)  # would fail the call if it were sent
    assert model.generate(MSGS).raw["cache"] == "hit"
    assert len(recording_server.requests) == 1


def test_the_stored_content_is_trimmed_at_the_stop(recording_server: RecordingServer, tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    first = api_model(recording_server, db, "read_write").generate(MSGS, stop_sequences=["recording"])
    assert first.content == "Hello from the "
    replayed = api_model(recording_server, db, "replay").generate(MSGS, stop_sequences=["recording"])
    assert replayed.content == "Hello from the "
    (stored,) = [json.loads(r[0]) for r in sqlite3.connect(db).execute("SELECT reply FROM responses")]
    assert stored["content"] == "Hello from the "


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.7},
        {"stop_sequences": ["from"]},
        {"messages": [{"role": "user", "content": "Say goodbye"}]},
        {"max_tokens": 5},
        {"tools_to_call_from": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"model_id": "another-model"},
        # names holding "token" / "key" that are no credential (issue 22, item 7)
        {"stop_token_ids": [7]},
        {"keywords": ["x"]},
    ],
)
def test_a_different_request_is_a_miss(
    recording_server: RecordingServer, tmp_path: Path, change: dict[str, Any]
) -> None:
    db = tmp_path / "c.sqlite"
    api_model(recording_server, db, "read_write").generate(MSGS, temperature=0.0)
    call: dict[str, Any] = {"temperature": 0.0}
    build: dict[str, Any] = {}
    for key, value in change.items():
        (build if key == "model_id" else call)[key] = value
    messages = call.pop("messages", MSGS)
    model = api_model(recording_server, db, "replay")
    if build:
        model = OpenAIServerModel(
            api_base=f"{recording_server.url}/v1", cache={"mode": "replay", "path": str(db)}, **build
        )
    with pytest.raises(CacheMissError):
        model.generate(messages, **call)
    assert len(recording_server.requests) == 1


def test_another_api_key_or_timeout_is_a_hit(recording_server: RecordingServer, tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    api_model(recording_server, db, "read_write", api_key="sk-key-of-alice").generate(MSGS)
    other = api_model(
        recording_server, db, "replay", api_key="sk-key-of-bob", timeout=5.0, retry={"max_attempts": 1}
    )
    assert other.generate(MSGS).raw["cache"] == "hit"
    # the configured default and the same per-call value are one request
    assert api_model(recording_server, db, "read_write").generate(MSGS).raw["cache"] == "hit"
    assert len(recording_server.requests) == 1
    text = db.read_bytes()
    assert b"sk-key-of-alice" not in text and b"sk-key-of-bob" not in text


def test_credentials_in_an_endpoint_url_are_not_part_of_the_key(tmp_path: Path) -> None:
    def build(base: str) -> OpenAIServerModel:
        return OpenAIServerModel(
            model_id="m", api_base=base, cache={"mode": "replay", "path": str(tmp_path / "x")}
        )

    req = build("http://h:1/v1")._request(MSGS, None, None, None, None, {})
    same = [
        build(u)
        for u in ("http://h:1/v1/", "HTTP://H:1/v1", "http://user:pw@h:1/v1", "http://h:1/v1?api_key=zz")
    ]
    assert {request_key(m, req) for m in same} == {request_key(build("http://h:1/v1"), req)}
    assert request_key(build("http://h:2/v1"), req) != request_key(build("http://h:1/v1"), req)


def test_replay_miss_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "empty.sqlite"
    model = CallableModel(fn="examples.custom_model.custom_model", cache={"mode": "replay", "path": str(db)})
    with pytest.raises(CacheMissError) as info:
        model.generate(MSGS)
    text = str(info.value)
    assert "CallableModel" in text and "'callable'" in text and str(db) in text
    assert "cache.mode=read_write" in text and "replay" in text
    assert isinstance(info.value, ModelFactoryError)
    import pickle

    assert str(pickle.loads(pickle.dumps(info.value))) == text


def test_mode_off_never_touches_the_file(
    recording_server: RecordingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "never.sqlite"
    model = CallableModel(fn="examples.custom_model.custom_model", cache={"mode": "off", "path": str(db)})
    default = CallableModel(fn="examples.custom_model.custom_model")
    for m in (model, default):
        assert m.generate(MSGS).raw == m.generate(MSGS).raw != {"cache": "hit"}
    api = api_model(recording_server, db, "off")
    api.generate(MSGS)
    list(api.generate_stream(MSGS))
    assert len(recording_server.requests) == 2
    assert default.spec.cache.mode == "off"
    assert not db.exists() and not (tmp_path / ".modelfactory").exists()


def test_cache_spec_validation_and_shorthand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    m = CallableModel(fn="examples.custom_model.custom_model", cache="replay")
    assert m.spec.cache.mode == "replay"
    assert m.spec.cache.path == str(tmp_path / ".modelfactory" / "cache.sqlite")  # absolute at build time
    assert CallableModel(fn="examples.custom_model.custom_model", cache=None).spec.cache == CacheSpec()
    with pytest.raises(ConfigError) as info:
        CallableModel(fn="examples.custom_model.custom_model", cache={"mode": "sometimes", "pth": "x"})
    text = str(info.value)
    assert "cache.mode" in text and "cache.pth" in text and "did you mean 'path'" in text


# ------------------------------------------------------------------------ streams


def test_stream_recorded_then_replayed(recording_server: RecordingServer, tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    live = list(
        api_model(recording_server, db, "read_write").generate_stream(MSGS, stop_sequences=["server"])
    )
    text = "".join(d.content or "" for d in live)
    assert text == "Hello from the recording "
    assert len(recording_server.requests) == 1
    replayed = list(
        api_model(recording_server, db, "replay").generate_stream(MSGS, stop_sequences=["server"])
    )
    assert "".join(d.content or "" for d in replayed) == text
    assert replayed[-1].token_usage == live[-1].token_usage == TokenUsage(5, 7)
    # a stream and a plain call share their records
    assert api_model(recording_server, db, "replay").generate(MSGS, stop_sequences=["server"]).content == text
    assert len(recording_server.requests) == 1


def test_a_tool_call_stream_is_recorded_and_replayed_as_pieces(
    recording_server: RecordingServer, tmp_path: Path
) -> None:
    """Streamed tool calls are stored put together (arguments parsed, as generate returns them) and
    replayed as typed pieces that smolagents' agglomerate_stream_deltas merges again."""
    from modelfactory.messages import ToolCallStreamDelta, agglomerate_stream_deltas

    def chunk(delta: dict[str, Any], usage: dict[str, int] | None = None) -> dict[str, Any]:
        choices = [{"index": 0, "delta": delta, "finish_reason": None}] if delta else []
        return {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": choices,
        } | ({"usage": usage} if usage else {})

    recording_server.enqueue(
        200,
        [
            chunk(
                {"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "f"}}]}
            ),
            chunk(
                {"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "g"}}]}
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": 1}'}}]}),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"y": 2}'}}]}),
            chunk({}, {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}),
        ],
    )
    db = tmp_path / "t.sqlite"
    tools = [{"type": "function", "function": {"name": n, "parameters": {}}} for n in "fg"]
    live = list(api_model(recording_server, db, "read_write").generate_stream(MSGS, tools_to_call_from=tools))
    replayed = list(api_model(recording_server, db, "replay").generate_stream(MSGS, tools_to_call_from=tools))
    assert len(recording_server.requests) == 1
    pieces = [p for d in replayed for p in d.tool_calls or ()]
    assert all(isinstance(p, ToolCallStreamDelta) for p in pieces)
    calls = [
        (c.id, c.function.name, c.function.arguments)
        for c in agglomerate_stream_deltas(live).tool_calls or ()
    ]
    again = agglomerate_stream_deltas(replayed)
    assert [(c.id, c.function.name, c.function.arguments) for c in again.tool_calls or ()] == calls
    assert again.token_usage == TokenUsage(5, 7)
    stored = api_model(recording_server, db, "replay").generate(MSGS, tools_to_call_from=tools)
    assert [(c.id, c.function.name, c.function.arguments) for c in stored.tool_calls or ()] == [
        ("call_a", "f", {"x": 1}),
        ("call_b", "g", {"y": 2}),
    ]


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_streams_reasoning_is_recorded_and_replayed(
    recording_server: RecordingServer, tmp_path: Path, asynchronous: bool
) -> None:
    """The Responses API streams its reasoning summary apart from the text: a cached stream replays it as
    ``reasoning_content`` deltas (sync and async), before the text and never mixed into it."""
    import asyncio

    from modelfactory.backends.openai_responses import OpenAIResponsesModel
    from modelfactory.messages import ChatMessageStreamDelta, agglomerate_stream_deltas

    def model(mode: str) -> OpenAIResponsesModel:
        return OpenAIResponsesModel(
            model_id="o4-mini",
            api_base=f"{recording_server.url}/v1",
            api_key="sk-test-key-one",
            reasoning_effort="low",
            retry={"max_attempts": 1},
            cache={"mode": mode, "path": str(tmp_path / "r.sqlite")},
        )

    def stream(m: OpenAIResponsesModel) -> list[ChatMessageStreamDelta]:
        if not asynchronous:
            return list(m.generate_stream(MSGS))

        async def collect() -> list[ChatMessageStreamDelta]:
            return [d async for d in m.agenerate_stream(MSGS)]

        return asyncio.run(collect())

    live = stream(model("read_write"))
    replayed = stream(model("replay"))
    assert len(recording_server.requests) == 1
    assert "".join(d.reasoning_content or "" for d in live) == "thought"
    first = agglomerate_stream_deltas(live)
    again = agglomerate_stream_deltas(replayed)
    assert (again.content, again.reasoning_content) == (first.content, first.reasoning_content)
    assert all(not (d.reasoning_content and d.content) for d in replayed)
    assert replayed[0].reasoning_content == "thought"  # before the answer, as the provider streamed it
    assert replayed[-1].token_usage == live[-1].token_usage


def test_a_stream_stopped_early_is_not_stored(recording_server: RecordingServer, tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    stream = api_model(recording_server, db, "read_write").generate_stream(MSGS)
    next(stream)
    stream.close()
    assert rows(db) == 0


def test_stream_replay_miss_raises(recording_server: RecordingServer, tmp_path: Path) -> None:
    with pytest.raises(CacheMissError):
        list(api_model(recording_server, tmp_path / "s.sqlite", "replay").generate_stream(MSGS))
    assert recording_server.requests == []


# ------------------------------------------------------------------------ concurrent writers


def _reply(i: int) -> dict[str, Any]:
    return ChatMessage(content=f"reply {i}", token_usage=TokenUsage(i, 2 * i)).to_dict()


def test_threads_write_concurrently(tmp_path: Path) -> None:
    store = ResponseCache(tmp_path / "t.sqlite")
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                store.put(f"t{t}-{i}", "m", _reply(t * 100 + i))
                assert store.get(f"t{t}-{i}") == _reply(t * 100 + i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len(store) == 400
    for t in range(8):
        for i in range(50):
            assert store.get(f"t{t}-{i}") == _reply(t * 100 + i)


def _process_writer(path: str, proc: int, n: int) -> None:
    store = get_store(path)
    for i in range(n):
        store.put(f"p{proc}-{i}", "m", _reply(proc * 1000 + i))
        store.put("shared", "m", _reply(proc))  # the same key from every process: last one wins


def test_processes_write_concurrently(tmp_path: Path) -> None:
    path = str(tmp_path / "p.sqlite")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_writer, args=(path, p, 60)) for p in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    store = ResponseCache(path)
    assert len(store) == 3 * 60 + 1
    for p in range(3):
        for i in range(60):
            assert store.get(f"p{p}-{i}") == _reply(p * 1000 + i)
    assert store.get("shared") in [_reply(p) for p in range(3)]
    store.close()


def test_a_model_pickles_with_its_cache_in_use(tmp_path: Path) -> None:
    import pickle

    model = CallableModel(
        fn="examples.custom_model.custom_model", cache={"mode": "read_write", "path": str(tmp_path / "k")}
    )
    model.generate(MSGS)
    clone = pickle.loads(pickle.dumps(model))
    assert clone.generate(MSGS).raw["cache"] == "hit"


# ------------------------------------------------------------------------ run.py end to end


def _run(tmp: Path, *overrides: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(
        [sys.executable, "run.py", f"hydra.run.dir={tmp}", "model=custom_callable", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, json.loads((tmp / "result.json").read_text())


def test_run_py_records_then_replays(tmp_path: Path) -> None:
    db = tmp_path / "cache.sqlite"
    cache = [f"+model.cache.path={db}"]
    rec, recorded = _run(tmp_path / "a", "prompt=hello cache", "+model.cache.mode=read_write", *cache)
    assert rec.returncode == 0, rec.stderr
    assert rows(db) == 1
    rep, replayed = _run(tmp_path / "b", "prompt=hello cache", "+model.cache.mode=replay", *cache)
    assert rep.returncode == 0, rep.stderr
    assert replayed["content"] == recorded["content"] and replayed["error"] is None
    assert replayed["token_usage"] == recorded["token_usage"]
    miss, missed = _run(tmp_path / "c", "prompt=never recorded", "+model.cache.mode=replay", *cache)
    assert miss.returncode == 1
    assert missed["error"]["type"] == "CacheMissError" and str(db) in missed["error"]["message"]
    assert rows(db) == 1


def test_runner_looks_up_each_item_instead_of_batching(tmp_path: Path) -> None:
    from modelfactory.job.runner import run_items

    class Batching(CallableModel):
        def generate_batch(self, conversations: Any, **kwargs: Any) -> list[Any]:
            raise AssertionError("generate_batch bypasses the cache")

    db = tmp_path / "r.sqlite"
    items = [{"id": str(i), "messages": [{"role": "user", "content": f"item {i}"}]} for i in range(4)]
    for mode in ("read_write", "replay"):
        model = Batching(fn="examples.custom_model.custom_model", cache={"mode": mode, "path": str(db)})
        stats = run_items(model, items, results_path=tmp_path / f"{mode}.jsonl", progress=False)
        assert stats.mode != "batches" and stats.failed == 0 and stats.ok == 4
    assert rows(db) == 4


def test_local_generate_batch_looks_up_and_stores_each_row(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from modelfactory.backends.transformers import TransformersModel

    db = tmp_path / "b.sqlite"

    def local(mode: str) -> TransformersModel:
        return TransformersModel(
            model_id="builtin:tiny-llama",
            dtype="float32",
            max_new_tokens=8,
            temperature=0,
            cache={"mode": mode, "path": str(db)},
        )

    convs = [[{"role": "user", "content": f"Tell me about item {i}"}] for i in range(3)]
    first = local("read_write").generate_batch(convs[:2], stop_sequences=["zz"])
    assert rows(db) == 2 and all("cache" not in r.raw for r in first)
    mixed = local("read_write").generate_batch(convs, stop_sequences=["zz"])  # two hits, one generated
    assert [r.raw.get("cache") for r in mixed] == ["hit", "hit", None]
    assert [r.content for r in mixed[:2]] == [r.content for r in first]
    assert rows(db) == 3
    other = [[{"role": "user", "content": "never asked"}], convs[1]]
    replayed = local("replay").generate_batch(other, stop_sequences=["zz"], return_exceptions=True)
    assert isinstance(replayed[0], CacheMissError) and replayed[1].content == first[1].content
    with pytest.raises(CacheMissError):
        local("replay").generate_batch(other, stop_sequences=["zz"])


def test_runner_batches_a_local_model_with_its_cache_on(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from modelfactory.backends.transformers import TransformersModel
    from modelfactory.job.runner import run_items

    db = tmp_path / "r.sqlite"
    items = [{"id": str(i), "messages": [{"role": "user", "content": f"item {i}"}]} for i in range(5)]
    out = {}
    for mode in ("read_write", "replay"):
        model = TransformersModel(
            model_id="builtin:tiny-llama",
            max_new_tokens=6,
            temperature=0,
            cache={"mode": mode, "path": str(db)},
        )
        stats = run_items(model, items, local_batch_size=2, progress=False)
        assert stats.mode == "batches" and stats.ok == 5 and stats.failed == 0
        out[mode] = {r["id"]: r["content"] for r in stats.rows}
    assert out["replay"] == out["read_write"] and rows(db) == 5


def test_agenerate_shares_the_cache(recording_server: RecordingServer, tmp_path: Path) -> None:
    import asyncio

    db = tmp_path / "a.sqlite"
    first = api_model(recording_server, db, "read_write").generate(MSGS)

    async def replay() -> tuple[ChatMessage, str]:
        model = api_model(recording_server, db, "replay")
        reply = await model.agenerate(MSGS)
        text = "".join([d.content or "" async for d in model.agenerate_stream(MSGS)])
        with pytest.raises(CacheMissError):
            await model.agenerate([{"role": "user", "content": "unseen"}])
        return reply, text

    reply, text = asyncio.run(replay())
    assert reply.content == text == first.content and reply.raw["cache"] == "hit"
    assert len(recording_server.requests) == 1


# ------------------------------------------------------------------------ issue 16, item 1


def test_a_reply_echoing_a_credential_is_stored_scrubbed(tmp_path: Path) -> None:
    """A provider that echoes the key (or a header credential, or an api_key in generation_kwargs) must not
    put it in the file; a replay after the key was rotated must not hand the old key back."""
    db = tmp_path / "c.sqlite"
    key, header, extra = "sk-echoed-key-1111", "hdr-echoed-2222", "gen-echoed-3333"
    with RecordingServer(reply=f"key={key} header={header} extra={extra} ok") as srv:
        live = api_model(
            srv,
            db,
            "read_write",
            api_key=key,
            client_kwargs={"default_headers": {"X-Auth": header}},
            generation_kwargs={"api_key": extra},
        ).generate(MSGS)
        assert live.content is not None
        replayed = api_model(
            srv,
            db,
            "replay",
            api_key="sk-rotated-key-4444",
            client_kwargs={"default_headers": {"X-Auth": "x"}},
        ).generate(MSGS)
    stored = db.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("c.sqlite*"))
    for secret in (key, header, extra):
        assert secret.encode() not in stored
        assert secret not in (replayed.content or "")
    assert replayed.raw["cache"] == "hit" and replayed.content == "key=*** header=*** extra=*** ok"


@pytest.mark.parametrize("stored", ["{}", "null", '"text"', "[1]", "{not json", '{"role": "assistant"}'])
def test_a_corrupt_row_is_an_error_naming_the_file_and_the_fix(tmp_path: Path, stored: str) -> None:
    """Not a traceback, not an OK row with null content: the item fails with the file, the row and the fix."""
    from modelfactory.errors import DataError
    from modelfactory.job.runner import run_items

    db = tmp_path / "c.sqlite"
    model = CallableModel(
        fn="examples.custom_model.custom_model", cache={"mode": "read_write", "path": str(db)}
    )
    assert model.generate(MSGS).content  # recorded
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE responses SET reply = ?", (stored,))
    with pytest.raises(DataError) as info:
        model.generate(MSGS)
    assert str(db) in str(info.value) and "DELETE FROM responses WHERE key=" in str(info.value)
    stats = run_items(
        model, [{"id": "a", "messages": MSGS}], results_path=tmp_path / "r.jsonl", progress=False
    )
    row = json.loads((tmp_path / "r.jsonl").read_text())
    assert stats.failed == 1 and row["content"] is None and row["error"]["type"] == "DataError"
    assert str(db) in row["error"]["message"]
