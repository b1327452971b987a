"""Fault injection: every API backend against the scripted recording server on 127.0.0.1.

For OpenAI, Azure, HF InferenceClient and LiteLLM alike, each scenario asserts the number of attempts
(= requests the server recorded: the SDKs' own retries are off, so nothing stacks), bounds on the total
wall time (the waits of the retry policy, ``Retry-After`` included), and the final reply or error.
"""

from __future__ import annotations

import socket
import time
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

pytestmark = [
    pytest.mark.server,
    pytest.mark.filterwarnings("ignore:Item 'summary' on TypedDict:UserWarning"),
]

KEY = "sk-fault-KEY-0123456789abcdef"
MSGS = [{"role": "user", "content": "Say hello"}]
REPLY = "Hello from the recording server"
FAST = {"initial_wait": 0.05, "max_wait": 5.0, "jitter": 0.0}  # waits 0.05, 0.1, 0.2, ...
SLACK = 2.0  # seconds of per-request overhead allowed on top of the policy's waits (2 slow cores)

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


@pytest.fixture
def srv() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def build(backend: str, url: str, **kw: Any) -> Model:
    """The model, with its SDK imported and its client built, so timings measure requests only."""
    model = BACKENDS[backend](url, **kw)
    if isinstance(model, OpenAIServerModel):
        _ = model.client
    elif isinstance(model, LiteLLMModel):
        _ = model.litellm
    elif isinstance(model, HfApiModel):
        _ = model._sdk_params
    return model


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


def expect_error(fn: Callable[[], Any]) -> tuple[BackendError, float]:
    start = time.monotonic()
    with pytest.raises(BackendError) as info:
        fn()
    return info.value, time.monotonic() - start


# --------------------------------------------------------------------------- retried, then a reply


def test_429_with_retry_after_then_200(backend: str, srv: RecordingServer) -> None:
    srv.enqueue(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "1"})
    model = build(backend, srv.url, retry={"initial_wait": 0.01, "max_wait": 5})
    reply, elapsed = timed(lambda: model(MSGS))
    assert reply.content == REPLY
    assert len(srv.requests) == 2
    assert 1.0 <= elapsed < 1.0 + SLACK  # the provider's Retry-After, not the 0.01 s backoff


def test_500_then_503_then_200(backend: str, srv: RecordingServer) -> None:
    srv.enqueue(500, {"error": {"message": "boom"}})
    srv.enqueue(503, {"error": {"message": "busy"}})
    model = build(backend, srv.url, retry=FAST)
    reply, elapsed = timed(lambda: model(MSGS))
    assert reply.content == REPLY
    assert len(srv.requests) == 3
    assert 0.15 <= elapsed < 0.15 + SLACK  # 0.05 + 0.1 of backoff


def test_timeout_then_200(backend: str, srv: RecordingServer) -> None:
    srv.enqueue(200, delay=1.5)  # answers too late for timeout=0.3
    model = build(backend, srv.url, timeout=0.3, retry=FAST)
    reply, elapsed = timed(lambda: model(MSGS))
    assert reply.content == REPLY
    assert len(srv.requests) == 2
    assert 0.3 + 0.05 <= elapsed < 1.5  # gave up on the slow one, did not wait it out


def test_connection_reset_then_200(backend: str, srv: RecordingServer) -> None:
    srv.enqueue(kind="reset")
    model = build(backend, srv.url, retry=FAST)
    reply, elapsed = timed(lambda: model(MSGS))
    assert reply.content == REPLY
    assert len(srv.requests) == 2
    assert 0.05 <= elapsed < 0.05 + SLACK


def test_truncated_reply_then_200(backend: str, srv: RecordingServer) -> None:
    srv.enqueue(kind="truncate")  # half the JSON body, then the connection closes
    model = build(backend, srv.url, retry=FAST)
    reply, _ = timed(lambda: model(MSGS))
    assert reply.content == REPLY
    assert len(srv.requests) == 2


def test_empty_choices_then_200(backend: str, srv: RecordingServer) -> None:
    srv.enqueue(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []})
    model = build(backend, srv.url, retry=FAST)
    assert model(MSGS).content == REPLY
    assert len(srv.requests) == 2


def test_stream_start_is_retried(backend: str, srv: RecordingServer) -> None:
    srv.enqueue(503, {"error": {"message": "busy"}})
    model = build(backend, srv.url, retry=FAST)
    deltas = list(model.generate_stream(MSGS))
    assert "".join(d.content or "" for d in deltas) == REPLY
    assert len(srv.requests) == 2


# --------------------------------------------------------------------------- errors, at once or at the end


def test_malformed_json_is_not_retried(backend: str, srv: RecordingServer) -> None:
    srv.enqueue(200, "{not json")
    model = build(backend, srv.url, retry=FAST)
    err, elapsed = expect_error(lambda: model(MSGS))
    assert len(srv.requests) == 1
    assert err.retryable is False
    assert "not valid JSON" in str(err) or "not a valid chat completion" in str(err)
    assert err.model_id is not None and err.model_id in str(err)
    assert elapsed < SLACK


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
def test_client_errors_fail_at_once(backend: str, srv: RecordingServer, status: int, hint: str) -> None:
    srv.enqueue(status, {"error": {"message": f"{hint}: key {KEY} rejected"}})
    model = build(backend, srv.url, retry=FAST)
    err, elapsed = expect_error(lambda: model(MSGS))
    assert len(srv.requests) == 1
    assert (err.status, err.retryable, err.attempts) == (status, False, 1)
    assert hint in str(err)  # the provider's message ...
    assert KEY not in str(err)  # ... with the key scrubbed
    assert f"(HTTP {status})" in str(err)
    assert str(err.model_id) in str(err)
    assert elapsed < SLACK


def test_retries_run_out(backend: str, srv: RecordingServer) -> None:
    for _ in range(5):
        srv.enqueue(503, {"error": {"message": "still busy"}})
    model = build(backend, srv.url, retry={**FAST, "max_attempts": 3})
    err, elapsed = expect_error(lambda: model(MSGS))
    assert len(srv.requests) == 3
    assert (err.status, err.retryable, err.attempts) == (503, True, 3)
    assert "after 3 attempts" in str(err)
    assert "still busy" in str(err)
    assert 0.15 <= elapsed < 0.15 + SLACK


def test_retry_after_beyond_max_wait_gives_up_at_once(backend: str, srv: RecordingServer) -> None:
    srv.enqueue(429, {"error": {"message": "quota"}}, headers={"Retry-After": "120"})
    model = build(backend, srv.url, retry={"max_wait": 5})
    err, elapsed = expect_error(lambda: model(MSGS))
    assert len(srv.requests) == 1
    assert (err.status, err.retry_after) == (429, 120.0)
    assert "retry.max_wait" in str(err)
    assert elapsed < SLACK


def test_connection_refused_is_retried_then_reported(backend: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = build(backend, f"http://127.0.0.1:{port}", retry={**FAST, "max_attempts": 2})
    err, elapsed = expect_error(lambda: model(MSGS))
    assert "cannot connect" in str(err)
    assert (err.retryable, err.attempts, err.status) == (True, 2, None)
    assert KEY not in str(err)
    assert 0.05 <= elapsed < 0.05 + SLACK


def test_sdk_retries_are_off_by_default(backend: str, srv: RecordingServer) -> None:
    """The defaults (3 attempts) are the only retries: 1 request per attempt, never the SDK's on top."""
    for _ in range(5):
        srv.enqueue(500, {"error": {"message": "down"}})
    model = build(backend, srv.url, retry={"initial_wait": 0.01, "max_wait": 1})
    err, _ = expect_error(lambda: model(MSGS))
    assert len(srv.requests) == 3 == err.attempts
