"""``await model.agenerate(...)`` / ``model.agenerate_stream(...)``: every API backend on its SDK's async
client against the real recording server, plus the worker-thread default for backends without one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelfactory.backends.azure import AzureOpenAIServerModel
from modelfactory.backends.callable import CallableModel
from modelfactory.backends.hf_inference import HfApiModel
from modelfactory.backends.litellm import LiteLLMModel
from modelfactory.backends.openai import OpenAIServerModel
from modelfactory.clock import use_clock
from modelfactory.errors import BackendError, UnsupportedFeatureError
from modelfactory.messages import ChatMessage, ChatMessageStreamDelta, TokenUsage
from modelfactory.model import GenerationRequest, Model
from tests.servers.recording import RecordingServer
from tests.timing import VirtualClock, meet, together

pytestmark = pytest.mark.filterwarnings("ignore:Item 'summary' on TypedDict:UserWarning")

KEY = "sk-async-KEY-1111222233334444"
AZ_KEY = "az-async-KEY-0000aaaa1111bbbb"
MSGS = [{"role": "user", "content": "Say hello"}]


def openai_model(srv: RecordingServer, **kw: Any) -> Model:
    return OpenAIServerModel(model_id="test-model", api_base=f"{srv.url}/v1", api_key=KEY, **kw)


def azure_model(srv: RecordingServer, **kw: Any) -> Model:
    return AzureOpenAIServerModel(
        model_id="my-deployment", azure_endpoint=srv.url, api_key=AZ_KEY, api_version="2024-10-21", **kw
    )


def litellm_model(srv: RecordingServer, **kw: Any) -> Model:
    return LiteLLMModel(model_id="openai/test-model", api_base=f"{srv.url}/v1", api_key=KEY, **kw)


def hf_model(srv: RecordingServer, **kw: Any) -> Model:
    return HfApiModel(model_id="org/test-model", base_url=srv.url, **kw)


BACKENDS: dict[str, Callable[..., Model]] = {
    "openai": openai_model,
    "azure": azure_model,
    "litellm": litellm_model,
    "hf": hf_model,
}
NO_RETRY = {"retry": {"max_attempts": 1}}
FAST_RETRY = {"retry": {"max_attempts": 3, "initial_wait": 0.01, "max_wait": 0.05}}


@pytest.fixture(autouse=True)
def _hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub reads HF_HUB_OFFLINE once, at import, and then refuses even 127.0.0.1."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(params=sorted(BACKENDS))
def make(request: pytest.FixtureRequest) -> Callable[..., Model]:
    return BACKENDS[request.param]


async def collect(stream: Any) -> list[ChatMessageStreamDelta]:
    return [d async for d in stream]


# --------------------------------------------------------------------------- the contract, per backend


def test_agenerate_on_the_wire(make: Callable[..., Model], recording_server: RecordingServer) -> None:
    m = make(recording_server, **NO_RETRY)
    out = asyncio.run(m.agenerate(MSGS, stop_sequences=["server"], temperature=0.3))
    assert out.content == "Hello from the recording "  # trimmed before the stop, never containing it
    assert out.token_usage == TokenUsage(5, 7)
    body = recording_server.last.body
    assert body["stop"] == ["server"]
    assert body["temperature"] == 0.3
    assert body["messages"][-1]["content"] in ("Say hello", [{"type": "text", "text": "Say hello"}])
    assert not body.get("stream")


def test_agenerate_matches_generate(make: Callable[..., Model], recording_server: RecordingServer) -> None:
    m = make(recording_server, **NO_RETRY)
    sync = m.generate(MSGS, stop_sequences=["recording"], max_tokens=9)
    sync_body = recording_server.last.body
    out = asyncio.run(m.agenerate(MSGS, stop_sequences=["recording"], max_tokens=9))
    assert (out.content, out.token_usage) == (sync.content, sync.token_usage)
    assert recording_server.last.body == sync_body  # the same request on the wire


def test_agenerate_stream(make: Callable[..., Model], recording_server: RecordingServer) -> None:
    recording_server.reply = "streamed async reply<stop>not this"
    m = make(recording_server, **NO_RETRY)
    deltas = asyncio.run(collect(m.agenerate_stream(MSGS, stop_sequences=["<stop>"])))
    text = "".join(d.content or "" for d in deltas)
    assert text == "streamed async reply"
    assert "<stop>" not in text
    assert deltas[-1].token_usage == TokenUsage(5, 7)
    assert recording_server.last.body["stream"] is True


def test_agenerate_stream_consumer_stops_early(
    make: Callable[..., Model], recording_server: RecordingServer
) -> None:
    recording_server.reply = "one two three four five six"
    m = make(recording_server, **NO_RETRY)

    async def first() -> ChatMessageStreamDelta:
        stream = m.agenerate_stream(MSGS)
        async for delta in stream:
            await stream.aclose()  # type: ignore[attr-defined]
            return delta
        raise AssertionError("no delta")

    assert asyncio.run(first()).content


def test_error_is_backend_error(make: Callable[..., Model], recording_server: RecordingServer) -> None:
    recording_server.enqueue(
        400, {"error": {"message": "bad request: no such thing", "type": "invalid_request_error"}}
    )
    m = make(recording_server, **FAST_RETRY)
    with pytest.raises(BackendError) as info:
        asyncio.run(m.agenerate(MSGS))
    assert info.value.status == 400
    assert "no such thing" in str(info.value)
    assert len(recording_server.requests) == 1  # a 400 is not retried


def test_stream_error_is_backend_error(make: Callable[..., Model], recording_server: RecordingServer) -> None:
    recording_server.enqueue(401, {"error": {"message": "invalid key", "type": "invalid_request_error"}})
    m = make(recording_server, **NO_RETRY)
    with pytest.raises(BackendError) as info:
        asyncio.run(collect(m.agenerate_stream(MSGS)))
    assert info.value.status == 401
    assert KEY not in str(info.value) and AZ_KEY not in str(info.value)


def test_retry_500_then_200(make: Callable[..., Model], recording_server: RecordingServer) -> None:
    recording_server.enqueue(500, {"error": {"message": "boom", "type": "server_error"}})
    m = make(recording_server, **FAST_RETRY)
    out = asyncio.run(m.agenerate(MSGS))
    assert out.content == "Hello from the recording server"
    assert len(recording_server.requests) == 2


def test_stream_retried_before_first_delta(
    make: Callable[..., Model], recording_server: RecordingServer
) -> None:
    recording_server.enqueue(503, {"error": {"message": "busy", "type": "server_error"}})
    m = make(recording_server, **FAST_RETRY)
    deltas = asyncio.run(collect(m.agenerate_stream(MSGS)))
    assert "".join(d.content or "" for d in deltas) == "Hello from the recording server"
    assert len(recording_server.requests) == 2


def test_retries_give_up_with_attempt_count(
    make: Callable[..., Model], recording_server: RecordingServer
) -> None:
    for _ in range(3):
        recording_server.enqueue(500, {"error": {"message": "still down", "type": "server_error"}})
    m = make(recording_server, **FAST_RETRY)
    with pytest.raises(BackendError) as info:
        asyncio.run(m.agenerate(MSGS))
    assert info.value.attempts == 3
    assert len(recording_server.requests) == 3


def test_concurrent_calls_overlap(make: Callable[..., Model], recording_server: RecordingServer) -> None:
    n = 20
    recording_server.gate = together(n)  # each request waits until all n are in: only overlap releases them
    m = make(recording_server, **NO_RETRY)

    async def run_all() -> list[Any]:
        return await asyncio.gather(*(m.agenerate(MSGS) for _ in range(n)))

    outs = asyncio.run(run_all())
    assert [o.content for o in outs] == ["Hello from the recording server"] * n
    assert len(recording_server.requests) == n
    assert recording_server.max_in_flight == n, "the calls did not all overlap"


def test_model_reused_across_event_loops(recording_server: RecordingServer) -> None:
    m = openai_model(recording_server, **NO_RETRY)
    first = asyncio.run(m.agenerate(MSGS))
    second = asyncio.run(m.agenerate(MSGS))  # a new loop gets its own async client
    assert first.content == second.content == "Hello from the recording server"


def test_hf_async_sends_no_ambient_token(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_ambientSECRET000111222")
    m = hf_model(recording_server, **NO_RETRY)
    asyncio.run(m.agenerate(MSGS))
    asyncio.run(collect(m.agenerate_stream(MSGS)))
    for rec in recording_server.requests:
        assert "authorization" not in rec.headers
        assert all("hf_ambientSECRET" not in v for v in rec.headers.values())


def test_rate_limit_spaces_async_calls(recording_server: RecordingServer) -> None:
    m = openai_model(recording_server, requests_per_minute=600, **NO_RETRY)  # 0.1 s apart

    async def run_all() -> None:
        await asyncio.gather(*(m.agenerate(MSGS) for _ in range(4)))

    with use_clock(VirtualClock(frozen=True)) as clock:
        asyncio.run(run_all())
    assert len(recording_server.requests) == 4
    assert sorted(clock.asleeps) == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3)]
    assert clock.sleeps == []  # awaited: the event loop was never blocked


# --------------------------------------------------------------------------- the worker-thread default


def echo_fn(messages: list[dict[str, Any]], **kwargs: Any) -> str:
    return "echo: " + str(messages[-1]["content"]) + " END tail"


def test_callable_model_async_runs_in_threads() -> None:
    lock = threading.Lock()
    gate: threading.Barrier | None = together(5)
    inside, most, threads = 0, 0, set()

    def fn(messages: list[dict[str, Any]], **kwargs: Any) -> str:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
            threads.add(threading.get_ident())
        meet(gate)  # only five calls running side by side get past this at once
        with lock:
            inside -= 1
        return echo_fn(messages)

    m = CallableModel(fn=fn)

    async def run_all() -> list[Any]:
        return await asyncio.gather(*(m.agenerate(MSGS, stop_sequences=["END"]) for _ in range(5)))

    outs = asyncio.run(run_all())
    assert most == 5 and len(threads) == 5  # five worker threads at once, not one after another
    assert threading.get_ident() not in threads  # never on the event loop's thread
    assert [o.content for o in outs] == ["echo: Say hello "] * 5
    gate = None  # one sync call next: a five-party barrier would hold it until the barrier's timeout
    assert outs[0].content == m.generate(MSGS, stop_sequences=["END"]).content


class SyncStreamer(Model):
    """A backend with a sync stream only: ``agenerate_stream`` must pull it through worker threads."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(model_id="streamer", **kw)
        self.threads: list[int] = []

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        return ChatMessage(content="alpha beta END gamma", token_usage=TokenUsage(2, 4))

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        for piece in ("alpha ", "beta E", "ND gam", "ma"):
            self.threads.append(threading.get_ident())
            yield ChatMessageStreamDelta(content=piece)
        yield ChatMessageStreamDelta(token_usage=TokenUsage(2, 4))


def test_async_stream_default_pulls_the_sync_stream_in_threads() -> None:
    m = SyncStreamer()
    sync = list(m.generate_stream(MSGS, stop_sequences=["END"]))
    assert "".join(d.content or "" for d in sync) == "alpha beta "
    m.threads.clear()
    deltas = asyncio.run(collect(m.agenerate_stream(MSGS, stop_sequences=["END"])))
    assert "".join(d.content or "" for d in deltas) == "alpha beta "
    assert deltas[-1].token_usage == TokenUsage(2, 4)
    assert m.threads and threading.get_ident() not in m.threads  # pulled in worker threads


def test_callable_model_cannot_stream_sync_or_async() -> None:
    calls: list[Any] = []
    m = CallableModel(fn=lambda messages: calls.append(messages) or "x")
    with pytest.raises(UnsupportedFeatureError, match="CallableModel does not support streaming"):
        list(m.generate_stream(MSGS))
    with pytest.raises(UnsupportedFeatureError, match="CallableModel does not support streaming"):
        asyncio.run(collect(m.agenerate_stream(MSGS)))
    assert calls == []  # refused before the user's function ran


def test_unsupported_feature_raised_before_any_await(recording_server: RecordingServer) -> None:
    m = openai_model(recording_server, **NO_RETRY)
    with pytest.raises(UnsupportedFeatureError):
        asyncio.run(m.agenerate(MSGS, grammar={"type": "regex", "value": "a+"}))
    assert recording_server.requests == []


def test_response_cache_applies_to_async_calls(recording_server: RecordingServer, tmp_path: Any) -> None:
    cache = {"mode": "read_write", "path": str(tmp_path / "cache.sqlite")}
    m = openai_model(recording_server, cache=cache, **NO_RETRY)
    first = asyncio.run(m.agenerate(MSGS, stop_sequences=["server"]))
    again = asyncio.run(m.agenerate(MSGS, stop_sequences=["server"]))
    assert again.content == first.content == "Hello from the recording "
    assert len(recording_server.requests) == 1  # the second call was a cache hit
    streamed = asyncio.run(collect(m.agenerate_stream(MSGS, stop_sequences=["recording"])))
    replayed = asyncio.run(collect(m.agenerate_stream(MSGS, stop_sequences=["recording"])))
    assert "".join(d.content or "" for d in replayed) == "".join(d.content or "" for d in streamed)
    assert len(recording_server.requests) == 2  # one stream on the wire, the second replayed


# --------------------------------------------------------------------------- the runner


def test_runner_drives_native_async_models_on_one_event_loop() -> None:
    from modelfactory.job.runner import run_items

    items = [{"id": f"q{i}", "prompt": f"question number {i}"} for i in range(16)]
    with RecordingServer(echo=True) as srv:
        m = openai_model(srv, **NO_RETRY)
        seq = run_items(m, items, concurrency=1, progress=False, max_tokens=5)
        assert srv.max_in_flight == 1
        srv.gate = together(8)  # requests are held until 8 are in: only 8 at once gets them through
        conc = run_items(m, items, concurrency=8, progress=False, max_tokens=5)
    assert (seq.mode, conc.mode) == ("sequential", "async")
    assert conc.ok == 16 and conc.failed == 0
    assert srv.max_in_flight == 8, "async mode did not run 8 requests at once"

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row["id"], row["content"], row["usage"], row["error"])

    assert sorted(map(key, conc.rows)) == sorted(map(key, seq.rows))  # the same rows either way
    assert (conc.input_tokens, conc.output_tokens) == (seq.input_tokens, seq.output_tokens)


def test_runner_async_records_a_failing_item(recording_server: RecordingServer) -> None:
    from modelfactory.job.runner import run_items

    recording_server.enqueue(400, {"error": {"message": "bad one", "type": "invalid_request_error"}})
    m = openai_model(recording_server, **NO_RETRY)
    stats = run_items(m, [{"id": f"q{i}", "prompt": "hi"} for i in range(4)], concurrency=1, progress=False)
    assert stats.mode == "sequential"
    recording_server.enqueue(400, {"error": {"message": "bad one", "type": "invalid_request_error"}})
    stats = run_items(m, [{"id": f"q{i}", "prompt": "hi"} for i in range(4)], concurrency=4, progress=False)
    assert stats.mode == "async" and stats.ok == 3 and stats.failed == 1
    (bad,) = [r for r in stats.rows if r["error"]]
    assert "bad one" in bad["error"]["message"]


def test_runner_keeps_threads_for_models_without_an_async_client() -> None:
    from modelfactory.job.runner import run_items

    stats = run_items(CallableModel(fn=lambda messages: "ok"), [{"id": "a", "prompt": "x"}], progress=False)
    assert stats.mode == "threads"


def test_azure_async_routes_and_auth(recording_server: RecordingServer) -> None:
    m = azure_model(recording_server, **NO_RETRY)
    asyncio.run(m.agenerate(MSGS))
    asyncio.run(collect(m.agenerate_stream(MSGS)))
    for rec in recording_server.requests:
        assert rec.path == "/openai/deployments/my-deployment/chat/completions"
        assert rec.query == {"api-version": "2024-10-21"}
        assert rec.headers["api-key"] == AZ_KEY and "authorization" not in rec.headers


def test_openai_async_client_kwargs(recording_server: RecordingServer) -> None:
    import httpx

    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(str(request.url))

    m = openai_model(
        recording_server,
        client_kwargs={"async_http_client": httpx.AsyncClient(event_hooks={"request": [hook]})},
        **NO_RETRY,
    )
    assert asyncio.run(m.agenerate(MSGS)).content == "Hello from the recording server"
    assert seen == [f"{recording_server.url}/v1/chat/completions"]
    assert m.generate(MSGS).content == "Hello from the recording server"  # the sync client ignores it
