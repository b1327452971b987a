"""``modelfactory serve`` under abuse (issue 16, items 9-11): a huge prompt, a huge stop list, slow bodies,
slow headers (slowloris), odd JSON and 200 concurrent requests each get a JSON answer (400/408 for the
caller's mistakes), client disconnects log one line, and ``/health`` keeps answering throughout.

The abusive clients run in a child process (``python -m bench.serve_abuse --abuse URL``); ``/health`` is
polled from this one (its client timeout, :data:`HEALTH_HANG_GUARD_S`, only stops a hang): the test asserts
every poll is *answered*, never how fast. The latency figures (the README's reliability section) are
``python -m bench.serve_abuse``'s, with the server, the clients and the prober in three processes.
Request-sized work off the event loop and the header deadline are checked structurally: the thread the
parsers ran in, and a server with a 0.5 s ``server.header_timeout_s`` closing a client that never ends
its headers.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("torch")

from bench.serve_abuse import FILES_LIMIT, settings_kwargs  # noqa: E402
from modelfactory import CallableModel  # noqa: E402
from modelfactory.backends.transformers import TransformersModel  # noqa: E402
from modelfactory.serve import BackgroundServer, ServerSettings  # noqa: E402
from modelfactory.serve.server import open_without_key  # noqa: E402

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
HEALTH_HANG_GUARD_S = 120.0  # a /health poll's client timeout: only stops a hang, never a bound on speed
BODY_TIMEOUT_S = 10.0  # also what a 1 MB body may take to arrive while 200 other requests are served
ASK = [{"role": "user", "content": "Hi"}]
HUGE_PROMPT = "word " * 200_000  # 1 MB: ~200k tokens for a 512-token model
HUGE_STOPS = [f"stop-{i}" for i in range(123_000)]


@pytest.fixture(scope="module")
def tiny() -> TransformersModel:
    return TransformersModel(model_id="builtin:tiny-llama", dtype="float32", max_new_tokens=8).load()


@pytest.fixture(scope="module")
def url(tiny: TransformersModel) -> Iterator[str]:
    settings = ServerSettings(port=0, log_level="warning", **settings_kwargs())  # what the abuse expects
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


def _tools(total_chars: int) -> list[dict[str, Any]]:
    """Tool definitions adding up to about ``total_chars`` characters of JSON."""
    per = 1000
    return [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": "d" * per,
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
        for i in range(total_chars // per)
    ]


def test_tools_and_schemas_count_toward_the_context_untokenized(
    url: str, tiny: TransformersModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22 item 8: 1 MB of tool definitions (or of a response_format schema) for a 512-token
    model is refused by its length, before any templating or tokenizing (before, the prep threads
    templated and tokenized every megabyte, and normal requests queued behind them)."""
    counted: list[int] = []
    real = tiny.count_prompt_tokens

    def spy(messages: Any, tools: Any = None) -> int:
        counted.append(len(json.dumps(tools)) if tools else 0)
        return real(messages, tools)

    monkeypatch.setattr(tiny, "count_prompt_tokens", spy)
    schema = {"type": "object", "description": "d" * 1_000_000}
    bodies = [
        {"messages": ASK, "tools": _tools(1_000_000)},
        {"messages": ASK, "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}},
    ]
    for body in bodies:
        error = error_of(post(url, body), 400)
        assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
        assert "the messages and tools alone are far longer" in error["message"]
    assert counted == []  # nothing was templated or tokenized
    assert post(url, {"messages": ASK, "max_tokens": 1}).status_code == 200  # and it still serves
    assert counted == [0]


def test_large_requests_never_hold_up_small_ones(
    tiny: TransformersModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bodies of 64 KiB or more are prepared in a thread of their own: while four requests with 100 KB
    of tools (within a 100,000-token context, so they are counted) are stuck in their token count, a
    small request is still answered. Before, two of them filled both prep threads and it waited."""
    entered: list[int] = []
    first, second, release = threading.Event(), threading.Event(), threading.Event()
    real = tiny.count_prompt_tokens

    def gated(messages: Any, tools: Any = None) -> int:
        if not tools:
            return real(messages, tools)
        entered.append(1)
        (second if len(entered) > 1 else first).set()
        release.wait(120)  # a hang guard
        return 10**6  # past the context: answered 400, never generated from (25k tokens on a 512 model)

    monkeypatch.setattr(tiny, "count_prompt_tokens", gated)
    settings = ServerSettings(
        port=0, log_level="warning", max_body_bytes=4_000_000, max_context_tokens=100_000
    )
    big = {"messages": ASK, "tools": _tools(100_000), "max_tokens": 1}
    with BackgroundServer(tiny, settings) as url, ThreadPoolExecutor(4) as pool:
        try:
            stuck = [pool.submit(post, url, big) for _ in range(4)]
            assert first.wait(60)  # one is being counted (a hang guard)
            second.wait(2)  # room for a second to start, as both prep threads did before
            small = post(url, {"messages": ASK, "max_tokens": 1}, timeout=60)
            assert small.status_code == 200, small.text[:300]
            assert not any(f.done() for f in stuck)
            assert len(entered) == 1  # one bulk thread: the others wait their turn
        finally:
            release.set()
        assert [f.result().status_code for f in stuck] == [400] * 4


def test_max_context_tokens_sets_the_limit(tiny: TransformersModel) -> None:
    settings = ServerSettings(port=0, log_level="warning", max_context_tokens=256)
    with BackgroundServer(tiny, settings) as url:
        assert post(url, {"messages": user("word " * 100), "max_tokens": 1}).status_code == 200
        error = error_of(post(url, {"messages": user("word " * 300)}), 400)
        assert "maximum context length is 256 tokens" in error["message"]


def test_a_bigger_max_context_tokens_does_not_take_the_model_past_its_own(tiny: TransformersModel) -> None:
    """The server's pre-check lets it through; the model's own check (the one every caller meets) answers
    the same 400."""
    settings = ServerSettings(port=0, log_level="warning", max_context_tokens=2048)
    with BackgroundServer(tiny, settings) as url:
        error = error_of(post(url, {"messages": user("word " * 600), "max_tokens": 1}), 400)
        assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
        assert "maximum context length is 512 tokens" in error["message"]
        assert post(url, {"messages": ASK, "max_tokens": 1}).status_code == 200


@pytest.fixture(scope="module")
def short_body_timeout() -> Iterator[str]:
    """A server whose body timeout is short (0.5 s), so the test sees it fire without waiting 10 s."""
    model = CallableModel(fn="examples.custom_model.custom_model")
    with BackgroundServer(model, ServerSettings(port=0, log_level="warning", body_timeout_s=0.5)) as url:
        yield url


def test_a_slow_body_gets_408(short_body_timeout: str) -> None:
    reply = _slow_body(short_body_timeout, hold_s=60)  # 60 s: a hang guard only
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
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def wait_for(self, needle: str, count: int, timeout: float = 60) -> None:
        """Until ``count`` records say ``needle`` (the timeout is a hang guard: the assertions tell)."""
        with self.changed:
            self.changed.wait_for(
                lambda: sum(needle in r.getMessage() for r in self.records) >= count, timeout=timeout
            )


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
        records.wait_for("went away", 3)  # the server has noticed the three disconnects mid-body
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
    """The abusive clients run in a process of their own (``bench.serve_abuse --abuse``), so the polls
    here share no GIL with them; the latency figures are the bench's (this test asserts no clock)."""
    stop = threading.Event()
    polls: list[int] = []
    failures: list[str] = []

    def poll_health() -> None:
        with httpx.Client(timeout=HEALTH_HANG_GUARD_S) as client:
            while not stop.is_set():
                try:
                    polls.append(client.get(f"{url}/health").status_code)
                except Exception as exc:  # refused, reset, or no answer at all
                    failures.append(repr(exc))
                stop.wait(0.05)  # paces the polls; returns at once when the abuse is over

    clients = subprocess.Popen(
        [sys.executable, "-m", "bench.serve_abuse", "--abuse", url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        out, err = clients.communicate(timeout=900)  # a hang guard
    finally:
        stop.set()
        poller.join()
    assert clients.returncode == 0, err[-3000:]
    answers = json.loads(out)
    assert answers["huge prompt"] == [400] * 3
    assert answers["huge stops"] == [400] * 2
    assert answers["huge tools"] == [400] * 8
    assert set(answers["chunked 60 MB upload"]) <= {"413", "closed"}  # cut short, never read whole
    assert all(mb < 30 for mb in answers["chunked upload MB sent"])
    flood = answers["0.9 MB uploads, never deleted"]
    assert flood.count("200") == FILES_LIMIT // 900_000  # then server.max_files_bytes is reached
    assert set(flood) == {"200", "413 files_full"}
    assert answers["slow body"] == ["HTTP/1.1 408"] * 40
    assert answers["slow headers"] == ["HTTP/1.1 408"] * 40  # closed by server.header_timeout_s
    assert answers["concurrent"] == [200] * 200
    # Every poll answered (no failure), however slowly, and the poller did run during the abuse.
    assert failures == []
    assert polls and set(polls) == {200}


# --------------------------------------------------------------------------- slow headers (slowloris)


@pytest.fixture(scope="module")
def short_header_timeout() -> Iterator[str]:
    """A server whose header timeout is short (0.5 s), so a test sees it fire without waiting long."""
    model = CallableModel(fn="examples.custom_model.custom_model")
    settings = ServerSettings(port=0, log_level="warning", header_timeout_s=0.5)
    with BackgroundServer(model, settings) as url:
        yield url


def _connect(url: str) -> socket.socket:
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)  # 30 s: a hang guard only
    return sock


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n", b"POST /v1/chat/completions HTTP/1.1\r\nHost"],
    ids=["nothing", "half-the-headers", "half-a-header"],
)
def test_a_client_that_never_finishes_its_headers_is_closed(short_header_timeout: str, sent: bytes) -> None:
    """Before: the connection stayed open for ever (recv timed out after the 30 s guard)."""
    with _connect(short_header_timeout) as sock:
        sock.sendall(sent)
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"


def test_a_slowloris_dribbling_header_bytes_is_closed(short_header_timeout: str) -> None:
    """A byte every 0.1 s: each byte would have reset an idle timeout; the header deadline does not move."""
    with _connect(short_header_timeout) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sock.settimeout(0.1)
        answer = b""
        sent = 0
        while not answer and sent < 3000:  # 3000 bytes (5 minutes): a hang guard only
            try:
                answer = sock.recv(65536) or b"closed"
            except TimeoutError:
                try:
                    sock.sendall(b"a")
                    sent += 1
                except OSError:
                    answer = b"closed"
            except ConnectionResetError:  # see _answer
                answer = b"closed"
        sock.settimeout(30)
        answer += _answer(sock) if answer != b"closed" else b""
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_the_header_timeout_leaves_keep_alive_and_whole_requests_alone(short_header_timeout: str) -> None:
    """A request sent whole, a pause longer than the header timeout (uvicorn's keep-alive, 5 s, covers
    the idle connection), then a second request on the same connection: both answered."""
    with _connect(short_header_timeout) as sock:
        for pause in (1.0, 0):  # twice the header timeout, well inside the keep-alive; none after the last
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _answer(sock).startswith(b"HTTP/1.1 200")
            time.sleep(pause)


def _answer(sock: socket.socket) -> bytes:
    """One whole answer with a JSON body, or what came before the server closed.

    A reset is a close too: a byte the client sends after the server closed (the slowloris test dribbles
    one every 0.1 s) is answered with RST by the server's kernel, and the next recv raises ECONNRESET
    instead of returning b"" (seen once in a whole-suite run, after a first recv had returned bytes)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and data.rstrip().endswith(b"}"):
                break
    except (TimeoutError, ConnectionResetError):
        pass
    return data


# --------------------------------------------------------------------------- request-sized work off the loop


def test_batch_files_and_chat_bodies_are_parsed_in_worker_threads(
    echo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The functions that parse what a client uploaded run in the prep threads, never on the event loop
    (a 200 MB batch file would stop ``/health`` for as long as it takes). A pass-through spy records
    the thread each call ran in; the real parser runs."""
    from modelfactory.serve import batch_routes, routes

    threads: dict[str, list[str]] = {"parse_lines": [], "parse_request": []}

    def spy(name: str, real: Any) -> Any:
        def call(*args: Any) -> Any:
            threads[name].append(threading.current_thread().name)
            return real(*args)

        return call

    monkeypatch.setattr(batch_routes, "parse_lines", spy("parse_lines", batch_routes.parse_lines))
    monkeypatch.setattr(routes, "parse_request", spy("parse_request", routes.parse_request))
    assert post(echo_url, {"messages": ASK}).status_code == 200
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": ASK}}
    with httpx.Client(base_url=echo_url, timeout=60) as client:
        uploaded = client.post(
            "/v1/files", files={"file": ("in.jsonl", json.dumps(line).encode())}, data={"purpose": "batch"}
        ).json()
        body = {
            "input_file_id": uploaded["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        assert client.post("/v1/batches", json=body).status_code == 200
    assert threads["parse_lines"] and threads["parse_request"]
    for name, ran_in in threads.items():
        assert all(t.startswith("modelfactory-prep") for t in ran_in), (name, ran_in)


# --------------------------------------------------------------------------- fuzzed bodies, a fast model

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=False, allow_infinity=False),  # httpx refuses to encode inf (not JSON)
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
