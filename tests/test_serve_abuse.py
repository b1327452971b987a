"""``modelfactory serve`` under abuse (issue 16, items 9-11): a huge prompt, a huge stop list, slow bodies,
odd JSON and 200 concurrent requests each get a JSON answer (400/408 for the caller's mistakes), client
disconnects log one line, and ``/health`` keeps answering throughout.

``/health`` is polled with a generous per-request client timeout (:data:`HEALTH_TIMEOUT_S`); the test asserts
every poll *completes*, and prints the slowest one (the figure in the README's reliability section).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("torch")

from modelfactory import CallableModel  # noqa: E402
from modelfactory.backends.transformers import TransformersModel  # noqa: E402
from modelfactory.serve import BackgroundServer, ServerSettings  # noqa: E402
from modelfactory.serve.server import open_without_key  # noqa: E402

pytestmark = pytest.mark.server

HEALTH_TIMEOUT_S = 5.0  # generous: the test asserts every /health request completes within it
BODY_TIMEOUT_S = 10.0  # also what a 1 MB body may take to arrive while 200 other requests are served
ASK = [{"role": "user", "content": "Hi"}]
HUGE_PROMPT = "word " * 200_000  # 1 MB: ~200k tokens for a 512-token model
HUGE_STOPS = [f"stop-{i}" for i in range(123_000)]


@pytest.fixture(scope="module")
def tiny() -> TransformersModel:
    return TransformersModel(model_id="builtin:tiny-llama", dtype="float32", max_new_tokens=8).load()


@pytest.fixture(scope="module")
def url(tiny: TransformersModel) -> Iterator[str]:
    settings = ServerSettings(
        port=0, log_level="warning", max_body_bytes=4_000_000, body_timeout_s=BODY_TIMEOUT_S
    )
    with BackgroundServer(tiny, settings) as url:
        yield url


def post(url: str, body: Any, timeout: float = 120) -> httpx.Response:
    if isinstance(body, bytes):
        headers = {"content-type": "application/json"}
        return httpx.post(f"{url}/v1/chat/completions", content=body, headers=headers, timeout=timeout)
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=timeout)


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text[:500]
    error: dict[str, Any] = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# --------------------------------------------------------------------------- one bad request at a time


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": ASK, "seed": 2**70}, "seed", "invalid_value"),
        ({"messages": ASK, "seed": -(2**64)}, "seed", "invalid_value"),
        (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', None, "invalid_json"),
        (b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, "invalid_json"),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
            "temperature",
            "invalid_value",
        ),
        ({"messages": ASK, "stop": [f"s{i}" for i in range(17)]}, "stop", None),
        ({"messages": ASK, "stop": HUGE_STOPS}, "stop", None),
        ({"messages": user(HUGE_PROMPT)}, "messages", "context_length_exceeded"),
        ({"messages": user("word " * 600)}, "messages", "context_length_exceeded"),  # 600 tokens: counted
        ({"messages": ASK, "max_tokens": 600}, "messages", "context_length_exceeded"),  # prompt + reply
    ],
    ids=[
        "seed-2**70",
        "seed-negative",
        "lone-surrogate",
        "100k-deep-json",
        "nan-temperature",
        "17-stops",
        "123k-stops",
        "1MB-prompt",
        "600-token-prompt",
        "max_tokens-over-context",
    ],
)
def test_the_callers_mistakes_are_400_json(url: str, body: Any, param: str | None, code: str | None) -> None:
    error = error_of(post(url, body), 400)
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    if code == "context_length_exceeded":
        assert "maximum context length is 512 tokens" in error["message"]
    assert post(url, {"messages": ASK, "max_tokens": 1}).status_code == 200  # and it still serves


def test_max_context_tokens_sets_the_limit(tiny: TransformersModel) -> None:
    settings = ServerSettings(port=0, log_level="warning", max_context_tokens=2048)
    with BackgroundServer(tiny, settings) as url:
        assert post(url, {"messages": user("word " * 600), "max_tokens": 1}).status_code == 200
        error = error_of(post(url, {"messages": user("word " * 2100)}), 400)
        assert "maximum context length is 2048 tokens" in error["message"]


def test_a_slow_body_gets_408(url: str) -> None:
    reply = _slow_body(url, hold_s=BODY_TIMEOUT_S * 10)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"


def _slow_body(url: str, hold_s: float) -> bytes:
    """Headers and a first byte of a 100-byte body, then nothing: what the server answers, if anything."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=hold_s) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 100\r\n\r\n{"
        )
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data and data.rstrip().endswith(b"}"):
                    break
        except TimeoutError:
            pass
        return data


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_client_disconnects_log_one_line_not_a_traceback(url: str) -> None:
    records = _Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn", "")]  # uvicorn.* stop at "uvicorn"
    for lg in loggers:
        lg.addHandler(records)
    old = logging.getLogger("modelfactory.serve").level
    logging.getLogger("modelfactory.serve").setLevel(logging.INFO)
    try:
        u = urlparse(url)
        for _ in range(3):  # gone halfway through the body
            with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
                sock.sendall(
                    b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-length: 1000\r\n\r\n{"messa'
                )
        body = json.dumps({"messages": ASK, "stream": True, "max_tokens": 8}).encode()
        for _ in range(3):  # gone after the first chunk of a stream
            with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
                sock.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                sock.recv(100)
        assert post(url, {"messages": ASK, "max_tokens": 1}).status_code == 200
        time.sleep(0.5)  # the server notices the last disconnects
    finally:
        for lg in loggers:
            lg.removeHandler(records)
        logging.getLogger("modelfactory.serve").setLevel(old)
    tracebacks = [r for r in records.records if r.exc_info or "Traceback" in r.getMessage()]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]
    lines = [r.getMessage() for r in records.records if "went away" in r.getMessage()]
    assert len(lines) == 3 and all("\n" not in line for line in lines)


# --------------------------------------------------------------------------- everything at once


def test_health_answers_throughout_abuse(url: str) -> None:
    stop = threading.Event()
    latencies: list[float] = []
    failures: list[str] = []

    def poll_health() -> None:
        with httpx.Client(timeout=HEALTH_TIMEOUT_S) as client:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    assert client.get(f"{url}/health").status_code == 200
                except Exception as exc:  # a timeout: /health did not answer in HEALTH_TIMEOUT_S
                    failures.append(repr(exc))
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.05)

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        with ThreadPoolExecutor(64) as pool:
            huge = [pool.submit(post, url, {"messages": user(HUGE_PROMPT)}) for _ in range(3)]
            stops = [pool.submit(post, url, {"messages": ASK, "stop": HUGE_STOPS}) for _ in range(2)]
            slow = [pool.submit(_slow_body, url, BODY_TIMEOUT_S * 4) for _ in range(40)]
            small = [
                pool.submit(post, url, {"messages": user(f"Hi {i}"), "max_tokens": 2}) for i in range(200)
            ]
            statuses = {
                "huge prompt": [f.result().status_code for f in huge],
                "huge stops": [f.result().status_code for f in stops],
                "slow body": [f.result()[:12] for f in slow],
                "concurrent": [f.result().status_code for f in small],
            }
    finally:
        stop.set()
        poller.join()
    assert statuses["huge prompt"] == [400] * 3
    assert statuses["huge stops"] == [400] * 2
    assert statuses["slow body"] == [b"HTTP/1.1 408"] * 40
    assert statuses["concurrent"] == [200] * 200
    # Every poll answered within HEALTH_TIMEOUT_S (no failure), and the poller did run during the abuse.
    assert failures == []
    assert latencies, "the /health poller never polled"
    print(f"/health during abuse: {len(latencies)} polls, slowest {max(latencies):.3f} s")


# --------------------------------------------------------------------------- fuzzed bodies, a fast model

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=False),
        st.text(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
fields = st.sampled_from(
    ["messages", "stop", "temperature", "top_p", "max_tokens", "seed", "n", "stream", "model", "tools"]
)


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    model = CallableModel(fn="examples.custom_model.custom_model")
    with BackgroundServer(model, ServerSettings(port=0, log_level="warning")) as url:
        yield url


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.dictionaries(fields, json_values, max_size=3))
def test_fuzzed_bodies_are_answered_never_500(echo_url: str, overrides: dict[str, Any]) -> None:
    body = {"messages": ASK, **overrides}
    resp = post(echo_url, body, timeout=30)
    assert resp.status_code in (200, 400, 404), resp.text[:300]
    if resp.status_code != 200:
        error_of(resp, resp.status_code)


def test_an_open_host_without_a_key_is_refused_unless_allowed() -> None:
    assert "allow_unauthenticated" in (open_without_key(ServerSettings(host="0.0.0.0")) or "")
    assert open_without_key(ServerSettings(host="0.0.0.0", allow_unauthenticated=True)) is None
    assert open_without_key(ServerSettings(host="0.0.0.0", api_key="k")) is None
    assert open_without_key(ServerSettings(host="127.0.0.1")) is None
