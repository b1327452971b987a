"""Fault injection: every API backend against the scripted recording server on 127.0.0.1.

For OpenAI, Azure, HF InferenceClient and LiteLLM alike, each scenario asserts the number of attempts
(= requests the server recorded: the SDKs' own retries are off, so nothing stacks), the exact waits the
retry policy asked for (``Retry-After`` included; recorded by a virtual clock, never slept, so no
stopwatch is involved), and the final reply or error.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelfactory.backends.azure import AzureOpenAIServerModel
from modelfactory.backends.hf_inference import HfApiModel
from modelfactory.backends.litellm import LiteLLMModel
from modelfactory.backends.openai import OpenAIServerModel
from modelfactory.errors import BackendError
from modelfactory.model import Model
from tests.servers.recording import RecordingServer
from tests.timing import VirtualClock

pytestmark = [
    pytest.mark.server,
    pytest.mark.filterwarnings("ignore:Item 'summary' on TypedDict:UserWarning"),
]

KEY = "sk-fault-KEY-0123456789abcdef"
MSGS = [{"role": "user", "content": "Say hello"}]
REPLY = "Hello from the recording server"
FAST = {"initial_wait": 0.05, "max_wait": 5.0, "jitter": 0.0}  # waits 0.05, 0.1, 0.2, ...

Maker = Callable[..., Model]


def _openai(url: str, **kw: Any) -> Model:
    return OpenAIServerModel(model_id="test-model", api_base=f"{url}/v1", api_key=KEY, **kw)


def _azure(url: str, **kw: Any) -> Model:
    return AzureOpenAIServerModel(
        model_id="test-deployment", azure_endpoint=url, api_key=KEY, api_version="2024-10-21", **kw
    )


def _hf(url: str, **kw: Any) -> Model:
    return HfApiModel(model_id="org/test-model", base_url=url, token=KEY, **kw)


def _litellm(url: str, **kw: Any) -> Model:
    return LiteLLMModel(model_id="openai/test-model", api_base=f"{url}/v1", api_key=KEY, **kw)


BACKENDS: dict[str, Maker] = {"openai": _openai, "azure": _azure, "hf": _hf, "litellm": _litellm}


@pytest.fixture(autouse=True)
def _hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub refuses all traffic when HF_HUB_OFFLINE was set at import (the suite sets it)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def clock(virtual_clock: VirtualClock) -> VirtualClock:
    """The retry waits of every test here, recorded (and not slept)."""
    return virtual_clock


@pytest.fixture
def srv() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def build(backend: str, url: str, **kw: Any) -> Model:
    return BACKENDS[backend](url, **kw)


def expect_error(fn: Callable[[], Any]) -> BackendError:
    with pytest.raises(BackendError) as info:
        fn()
    return info.value


# --------------------------------------------------------------------------- retried, then a reply


def test_429_with_retry_after_then_200(backend: str, srv: RecordingServer, clock: VirtualClock) -> None:
    srv.enqueue(429, {"error": {"message": "slow down", "type": "requests"}}, headers={"Retry-After": "1"})
    model = build(backend, srv.url, retry={"initial_wait": 0.01, "max_wait": 5})
    reply = model(MSGS)
    assert reply.content == REPLY
    assert len(srv.requests) == 2
    assert clock.sleeps == [1.0]  # the provider's Retry-After, not the 0.01 s backoff


def test_500_then_503_then_200(backend: str, srv: RecordingServer, clock: VirtualClock) -> None:
    srv.enqueue(500, {"error": {"message": "boom", "type": "server_error"}})
    srv.enqueue(503, {"error": {"message": "busy", "type": "server_error"}})
    model = build(backend, srv.url, retry=FAST)
    reply = model(MSGS)
    assert reply.content == REPLY
    assert len(srv.requests) == 3
    assert clock.sleeps == [0.05, 0.1]  # the back-off doubles


def test_timeout_then_200(backend: str, srv: RecordingServer, clock: VirtualClock) -> None:
    srv.enqueue(200, delay=120)  # would answer long after timeout=1 (and after pytest-timeout)
    model = build(backend, srv.url, timeout=1.0, retry=FAST)
    reply = model(MSGS)
    assert reply.content == REPLY  # only the second request can have answered: the first was given up
    assert len(srv.requests) == 2
    assert clock.sleeps == [0.05]


def test_connection_reset_then_200(backend: str, srv: RecordingServer, clock: VirtualClock) -> None:
    srv.enqueue(kind="reset")
    model = build(backend, srv.url, retry=FAST)
    reply = model(MSGS)
    assert reply.content == REPLY
    assert len(srv.requests) == 2
    assert clock.sleeps == [0.05]


def test_truncated_reply_then_200(backend: str, srv: RecordingServer, clock: VirtualClock) -> None:
    srv.enqueue(kind="truncate")  # half the JSON body, then the connection closes
    model = build(backend, srv.url, retry=FAST)
    reply = model(MSGS)
    assert reply.content == REPLY
    assert len(srv.requests) == 2
    assert clock.sleeps == [0.05]


def test_empty_choices_then_200(backend: str, srv: RecordingServer) -> None:
    srv.enqueue(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []})
    model = build(backend, srv.url, retry=FAST)
    assert model(MSGS).content == REPLY
    assert len(srv.requests) == 2


def test_stream_start_is_retried(backend: str, srv: RecordingServer, clock: VirtualClock) -> None:
    srv.enqueue(503, {"error": {"message": "busy", "type": "server_error"}})
    model = build(backend, srv.url, retry=FAST)
    deltas = list(model.generate_stream(MSGS))
    assert "".join(d.content or "" for d in deltas) == REPLY
    assert len(srv.requests) == 2
    assert clock.sleeps == [0.05]


# --------------------------------------------------------------------------- errors, at once or at the end


def test_malformed_json_is_not_retried(backend: str, srv: RecordingServer, clock: VirtualClock) -> None:
    srv.enqueue(200, "{not json")
    model = build(backend, srv.url, retry=FAST)
    err = expect_error(lambda: model(MSGS))
    assert len(srv.requests) == 1
    assert err.retryable is False
    assert "not valid JSON" in str(err) or "not a valid chat completion" in str(err)
    assert err.model_id is not None and err.model_id in str(err)
    assert clock.sleeps == []


def test_truncated_stream_is_not_retried_after_content(backend: str, srv: RecordingServer) -> None:
    srv.enqueue(kind="truncate")  # half the SSE events, then the connection closes
    model = build(backend, srv.url, retry=FAST)
    got: list[str] = []
    with pytest.raises(BackendError) as info:
        for delta in model.generate_stream(MSGS):
            got.append(delta.content or "")
    assert len(srv.requests) == 1  # content had reached the caller: never replayed
    assert got and REPLY.startswith("".join(got)) and "".join(got) != REPLY
    assert "not retried" in str(info.value)


@pytest.mark.parametrize(
    ("status", "hint"), [(401, "unauthorized"), (403, "forbidden"), (400, "bad request")]
)
def test_client_errors_fail_at_once(
    backend: str, srv: RecordingServer, clock: VirtualClock, status: int, hint: str
) -> None:
    srv.enqueue(
        status, {"error": {"message": f"{hint}: key {KEY} rejected", "type": "invalid_request_error"}}
    )
    model = build(backend, srv.url, retry=FAST)
    err = expect_error(lambda: model(MSGS))
    assert len(srv.requests) == 1
    assert (err.status, err.retryable, err.attempts) == (status, False, 1)
    assert hint in str(err)  # the provider's message ...
    assert KEY not in str(err)  # ... with the key scrubbed
    assert f"(HTTP {status})" in str(err)
    assert str(err.model_id) in str(err)
    assert clock.sleeps == []


def test_retries_run_out(backend: str, srv: RecordingServer, clock: VirtualClock) -> None:
    for _ in range(5):
        srv.enqueue(503, {"error": {"message": "still busy", "type": "server_error"}})
    model = build(backend, srv.url, retry={**FAST, "max_attempts": 3})
    err = expect_error(lambda: model(MSGS))
    assert len(srv.requests) == 3
    assert (err.status, err.retryable, err.attempts) == (503, True, 3)
    assert "after 3 attempts" in str(err)
    assert "still busy" in str(err)
    assert clock.sleeps == [0.05, 0.1]  # two waits, and no third after the last attempt


def test_retry_after_beyond_max_wait_gives_up_at_once(
    backend: str, srv: RecordingServer, clock: VirtualClock
) -> None:
    srv.enqueue(429, {"error": {"message": "quota", "type": "requests"}}, headers={"Retry-After": "120"})
    model = build(backend, srv.url, retry={"max_wait": 5})
    err = expect_error(lambda: model(MSGS))
    assert len(srv.requests) == 1
    assert (err.status, err.retry_after) == (429, 120.0)
    assert "retry.max_wait" in str(err)
    assert clock.sleeps == []


def test_connection_refused_is_retried_then_reported(backend: str, clock: VirtualClock) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = build(backend, f"http://127.0.0.1:{port}", retry={**FAST, "max_attempts": 2})
    err = expect_error(lambda: model(MSGS))
    assert "cannot connect" in str(err)
    assert (err.retryable, err.attempts, err.status) == (True, 2, None)
    assert KEY not in str(err)
    assert clock.sleeps == [0.05]


def test_sdk_retries_are_off_by_default(backend: str, srv: RecordingServer, clock: VirtualClock) -> None:
    """The defaults (3 attempts) are the only retries: 1 request per attempt, never the SDK's on top."""
    for _ in range(5):
        srv.enqueue(500, {"error": {"message": "down", "type": "server_error"}})
    model = build(backend, srv.url, retry={"initial_wait": 0.01, "max_wait": 1})
    err = expect_error(lambda: model(MSGS))
    assert len(srv.requests) == 3 == err.attempts
    assert len(clock.sleeps) == 2 and all(0.0 < w <= 0.02 for w in clock.sleeps)  # ours: 0.01, 0.02 jittered
