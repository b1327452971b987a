"""A fake OpenAI-compatible server for your own tests: real HTTP on 127.0.0.1, every request recorded.

Point any OpenAI-compatible client (our ``OpenAIServerModel``, ``HfApiModel(base_url=...)``,
``LiteLLMModel(model_id="openai/...", api_base=...)``, the ``openai`` SDK, smolagents) at it and assert
exactly what went over the wire, with no network and no API key::

    from modelfactory import OpenAIServerModel
    from modelfactory.testing import RecordingServer

    def test_my_agent_sends_the_question() -> None:
        with RecordingServer(reply="Paris") as server:  # started on a free port, stopped on exit
            model = OpenAIServerModel(model_id="any", api_base=f"{server.url}/v1", api_key="test")
            assert model([{"role": "user", "content": "Capital of France?"}]).content == "Paris"
        assert server.last.body["messages"][-1]["content"] == "Capital of France?"
        assert server.last.headers["authorization"] == "Bearer test"

What it answers (``POST`` to any path):

- by default a chat completion whose content is ``reply`` (or, with ``echo=True``, the last user
  message), with ``usage``; SSE chunks ending with a usage chunk when the body has ``"stream": true``;
  an Anthropic Messages reply on ``.../v1/messages``; an OpenAI Responses API reply on ``.../responses``
  (its typed events, ``response.created`` to ``response.completed``, when the body has ``"stream": true``;
  :meth:`RecordingServer.response_events` streams any reply a test builds, e.g. one with function calls);
- a scripted answer first, when one is queued: :meth:`RecordingServer.enqueue` takes a status, a JSON
  body (a list of chunks: a stream), headers and a ``delay`` (a slow server, for timeouts), or a fault:
  ``kind="reset"`` closes the connection without answering, ``kind="truncate"`` sends the headers and
  half the body, then closes;
- ``fail_rate``: that share of unscripted requests fails with ``fail_status`` (seeded, for load tests).

Concurrency without a stopwatch: :attr:`RecordingServer.max_in_flight` is the most ``POST`` requests
being answered at once; set :attr:`RecordingServer.gate` to a ``threading.Barrier(n, timeout=...)`` and
each ``POST`` waits until ``n`` are in, so ``n`` calls that really overlap pass together, while calls
made one at a time break the barrier and leave ``max_in_flight`` below ``n``.

Every request lands in :attr:`RecordingServer.requests` as a :class:`Recorded` (method, path, query,
lower-cased headers, parsed JSON body); :attr:`RecordingServer.last` is the latest. ``GET`` answers a
one-model list (``/v1/models``); ``GET /_stats`` reports counts for a server run in another process with
``python -m modelfactory.testing [port] [--fail-rate R] [--echo]`` (it prints its URL, then serves).

Standard library only: importing it costs nothing and needs no extra.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

__all__ = ["STOP_POLL_S", "Recorded", "RecordingServer", "Scripted", "main"]

STOP_POLL_S = 0.01
"""How often a server thread checks whether it was stopped: ``socketserver``'s ``serve_forever`` sees
``shutdown()`` only at its next poll, so stopping a server takes up to that long. Before this constant
the suite's fake batch providers used the default poll, 0.5 s (~0.4 s per stop), and RecordingServer
0.05 s (~50 ms per stop). Between two polls an idle server makes one ``select`` call: no CPU worth
counting."""


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 resets connections under a 64-thread load

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return  # a client that gave up (a timeout test): not worth a traceback
        super().handle_error(request, client_address)


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or the raw text when it was not JSON
    raw: bytes = b""


@dataclass
class Scripted:
    """One queued answer (see :meth:`RecordingServer.enqueue`)."""

    status: int = 200
    body: Any = None  # dict -> JSON; str/bytes sent as-is; None -> the default completion
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    kind: str = "reply"  # "reply" | "reset" (close without answering) | "truncate" (half a reply, then close)


class RecordingServer:
    """An OpenAI-compatible HTTP server on ``host`` (127.0.0.1) that records requests and answers them
    with ``reply`` or with what was queued by :meth:`enqueue`. Use it as a context manager, or call
    :meth:`start` and :meth:`stop`. Thread-safe: the server answers each request in its own thread."""

    def __init__(
        self,
        reply: str = "Hello from the recording server",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        fail_rate: float = 0.0,
        fail_status: int = 500,
        seed: int = 0,
        echo: bool = False,
    ) -> None:
        self.reply = reply
        self.fail_rate = fail_rate
        self.fail_status = fail_status
        self.echo = echo
        self.injected_failures = 0
        self.in_flight = 0
        self.max_in_flight = 0  # the high-water mark of POSTs being answered at once
        self.gate: threading.Barrier | None = None  # when set, each POST waits there until N are in
        self._rng = random.Random(seed)
        self.usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        self.requests: list[Recorded] = []
        self._script: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._httpd = _Server((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": STOP_POLL_S}, daemon=True
        )

    # -------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RecordingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -------------------------------------------------------------- scripting
    def enqueue(
        self,
        status: int = 200,
        body: Any = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        kind: str = "reply",
    ) -> None:
        """Queue the answer to the next unscripted request: ``status`` with ``body`` (a dict is sent as
        JSON, str/bytes as-is, a list of dicts as a server-sent-events stream of those chunks ending with
        ``[DONE]``; None with 200 is the default completion), after ``delay`` seconds; or a fault,
        ``kind="reset"`` / ``"truncate"``. Answers are used in the order they were queued."""
        if kind not in ("reply", "reset", "truncate"):
            raise ValueError(f"unknown kind {kind!r}")
        self._script.append(Scripted(status, body, headers or {}, delay, kind))

    def reply_for(self, body: Any) -> str:
        if self.echo and isinstance(body, dict) and isinstance(body.get("messages"), list):
            for msg in reversed(body["messages"]):
                if (
                    isinstance(msg, dict)
                    and msg.get("role") == "user"
                    and isinstance(msg.get("content"), str)
                ):
                    return str(msg["content"])
        return self.reply

    @property
    def last(self) -> Recorded:
        assert self.requests, "the server received no request"
        return self.requests[-1]

    def completion(self, body: Any) -> dict[str, Any]:
        model = body.get("model", "unknown") if isinstance(body, dict) else "unknown"
        return {
            "id": "chatcmpl-rec",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_recording",  # TGI (huggingface_hub's types) requires it
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.reply_for(body)},
                    "finish_reason": "stop",
                }
            ],
            "usage": dict(self.usage),
        }

    def anthropic_message(self, body: Any) -> dict[str, Any]:
        model = body.get("model", "unknown") if isinstance(body, dict) else "unknown"
        return {
            "id": "msg_rec",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [
                # extended thinking asked for: a thinking block first, as the Messages API answers
                *(
                    [{"type": "thinking", "thinking": "thought", "signature": "sig_rec"}]
                    if isinstance(body, dict) and isinstance(body.get("thinking"), dict)
                    else []
                ),
                {"type": "text", "text": self.reply_for(body)},
            ],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.usage["prompt_tokens"],
                "output_tokens": self.usage["completion_tokens"],
            },
        }

    def response(self, body: Any) -> dict[str, Any]:
        """A Responses API reply (``/v1/responses``): a reasoning summary when the request asked for
        reasoning, then the output text."""
        model = body.get("model", "unknown") if isinstance(body, dict) else "unknown"
        text = self.reply_for({"messages": body.get("input")} if isinstance(body, dict) else body)
        output: list[dict[str, Any]] = []
        reasoning = isinstance(body, dict) and isinstance(body.get("reasoning"), dict)
        if reasoning:
            output.append(
                {
                    "id": "rs_rec",
                    "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": "thought"}],
                }
            )
        output.append(
            {
                "id": "msg_rec",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
        n_in, n_out = self.usage["prompt_tokens"], self.usage["completion_tokens"]
        n_reason = n_out // 2 if reasoning else 0
        return {
            "id": "resp_rec",
            "object": "response",
            "created_at": int(time.time()),
            "model": model,
            "status": "completed",
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": n_in,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": n_out,
                "output_tokens_details": {"reasoning_tokens": n_reason},
                "total_tokens": n_in + n_out,
            },
        }

    def response_events(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        """A Responses API reply (:meth:`response`, or one a test built) as the events the API streams:
        ``response.created``; per output item ``response.output_item.added``, its pieces (reasoning
        summary text, output text, function-call arguments: each in deltas of 3 characters, then its
        ``.done``) and ``response.output_item.done``; ``response.completed`` with the whole reply. Each
        event is one of the openai SDK's ``ResponseStreamEvent`` types."""
        events: list[dict[str, Any]] = []

        def emit(kind: str, **fields: Any) -> None:
            events.append({"type": kind, "sequence_number": len(events), **fields})

        def pieces(text: str) -> list[str]:
            return [text[i : i + 3] for i in range(0, len(text), 3)]

        started = {**response, "status": "in_progress", "output": [], "usage": None}
        emit("response.created", response=started)
        emit("response.in_progress", response=started)
        for n, item in enumerate(response.get("output") or []):
            at = {"output_index": n, "item_id": item.get("id", "")}
            kind = item.get("type")
            if kind == "message":
                emit(
                    "response.output_item.added",
                    output_index=n,
                    item={**item, "content": [], "status": "in_progress"},
                )
                for c, part in enumerate(item.get("content") or []):
                    text = part.get("text", "")
                    emit("response.content_part.added", **at, content_index=c, part={**part, "text": ""})
                    for piece in pieces(text):
                        emit("response.output_text.delta", **at, content_index=c, delta=piece, logprobs=[])
                    emit("response.output_text.done", **at, content_index=c, text=text, logprobs=[])
                    emit("response.content_part.done", **at, content_index=c, part=part)
            elif kind == "reasoning":
                emit("response.output_item.added", output_index=n, item={**item, "summary": []})
                for k, part in enumerate(item.get("summary") or []):
                    text = part.get("text", "")
                    emit(
                        "response.reasoning_summary_part.added",
                        **at,
                        summary_index=k,
                        part={**part, "text": ""},
                    )
                    for piece in pieces(text):
                        emit("response.reasoning_summary_text.delta", **at, summary_index=k, delta=piece)
                    emit("response.reasoning_summary_text.done", **at, summary_index=k, text=text)
                    emit("response.reasoning_summary_part.done", **at, summary_index=k, part=part)
            elif kind == "function_call":
                args = str(item.get("arguments", ""))
                emit(
                    "response.output_item.added",
                    output_index=n,
                    item={**item, "arguments": "", "status": "in_progress"},
                )
                for piece in pieces(args):
                    emit("response.function_call_arguments.delta", **at, delta=piece)
                emit("response.function_call_arguments.done", **at, arguments=args)
            emit("response.output_item.done", output_index=n, item=item)
        emit("response.completed", response=response)
        return events

    def chunks(self, body: Any) -> list[dict[str, Any]]:
        model = body.get("model", "unknown") if isinstance(body, dict) else "unknown"
        base = {
            "id": "chatcmpl-rec",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "system_fingerprint": "fp_recording",
        }
        reply = self.reply_for(body)
        pieces = [reply[i : i + 3] for i in range(0, len(reply), 3)]
        out = [
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": p}, "finish_reason": None}
                ],
            }
            for p in pieces
        ]
        # every delta names its role: huggingface_hub's (TGI's) chunk type requires it, OpenAI allows it
        out.append(
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": "stop"}]}
        )
        out.append({**base, "choices": [], "usage": dict(self.usage)})
        return out

    # -------------------------------------------------------------- HTTP
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class, bound to this server (each request reads its state through it)."""
        server = self

        class Handler(_Handler):
            owner = server

        return Handler

    def _next_answer(self) -> Scripted:
        """What the next ``POST`` gets: the first queued answer, an injected failure (``fail_rate``), or
        the default reply."""
        with self._lock:
            if self._script:
                return self._script.popleft()
            if self.fail_rate and self._rng.random() < self.fail_rate:
                self.injected_failures += 1
                failure = {"message": "injected failure", "type": "server_error"}
                return Scripted(self.fail_status, {"error": failure})
            return Scripted()

    def _default_answer(self, rec: Recorded) -> tuple[bytes, str]:
        """The unscripted reply to ``rec`` and its content type, by the API its path names: OpenAI's
        Responses, Anthropic's Messages, else a chat completion (a stream when the body asks for one)."""
        if rec.path.endswith("/responses"):  # OpenAI's Responses API: typed events when streamed
            reply = self.response(rec.body)
            if isinstance(rec.body, dict) and rec.body.get("stream"):
                return _sse(self.response_events(reply)), "text/event-stream"
            return json.dumps(reply).encode(), "application/json"
        if rec.path.endswith("/v1/messages"):  # Anthropic's Messages API (litellm anthropic/...)
            return json.dumps(self.anthropic_message(rec.body)).encode(), "application/json"
        if isinstance(rec.body, dict) and rec.body.get("stream"):
            return _sse(self.chunks(rec.body)), "text/event-stream"
        return json.dumps(self.completion(rec.body)).encode(), "application/json"


def _sse(chunks: list[Any]) -> bytes:
    """``chunks`` as a server-sent-events stream: chat-completion chunks end with ``[DONE]``; Responses
    API events (a ``type`` of their own) go each under its ``event:`` name, and the stream just ends, as
    that API sends them."""
    typed = bool(chunks) and all(isinstance(c, dict) and isinstance(c.get("type"), str) for c in chunks)
    if typed:
        return b"".join(f"event: {c['type']}\ndata: {json.dumps(c)}\n\n".encode() for c in chunks)
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def _payload(body: Any) -> bytes:
    """A scripted body on the wire: bytes as they are, text encoded, anything else as JSON (None: an
    OpenAI-style server error)."""
    if body is None:
        body = {"error": {"message": "scripted", "type": "server_error"}}
    if isinstance(body, bytes):
        return body
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()


class _Handler(BaseHTTPRequestHandler):
    """Answers one connection's requests for :attr:`owner` (set by :meth:`RecordingServer._handler`)."""

    owner: RecordingServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _record(self) -> Recorded:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        parsed = urlparse(self.path)
        rec = Recorded(
            method=self.command,
            path=parsed.path,
            query={k: v[0] for k, v in parse_qs(parsed.query).items()},
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw=raw,
        )
        with self.owner._lock:
            self.owner.requests.append(rec)
        return rec

    def _send(
        self, status: int, payload: bytes, ctype: str, headers: dict[str, str], truncate: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(payload)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if truncate:  # promise the whole body, send half of it, hang up
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self._hang_up()
            return
        self.wfile.write(payload)

    def _hang_up(self, reset: bool = False) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            if reset:  # SO_LINGER 0: close() sends a TCP RST instead of a FIN
                linger = struct.pack("ii", 1, 0)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
            self.connection.close()

    def do_GET(self) -> None:
        server = self.owner
        if self.path == "/_stats":  # for a load test driving a server in another process
            with server._lock:
                stats = {"requests": len(server.requests), "injected_failures": server.injected_failures}
            self._send(200, json.dumps(stats).encode(), "application/json", {})
            return
        self._record()
        body = {
            "object": "list",
            "data": [{"id": "recorded-model", "object": "model", "created": 0, "owned_by": "tests"}],
        }
        self._send(200, json.dumps(body).encode(), "application/json", {})

    def do_POST(self) -> None:
        server = self.owner
        with server._lock:
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            if server.gate is not None:
                with contextlib.suppress(threading.BrokenBarrierError):
                    server.gate.wait()  # broken (timed out): answer; max_in_flight tells
            self._answer_post()
        finally:
            with server._lock:
                server.in_flight -= 1

    def _answer_post(self) -> None:
        """Record the request, then send what :meth:`RecordingServer._next_answer` says: a fault, a
        scripted stream or body, or the default reply."""
        rec = self._record()
        scripted = self.owner._next_answer()
        if scripted.delay:
            time.sleep(scripted.delay)
        if scripted.kind == "reset":
            self._hang_up(reset=True)
            return
        cut = scripted.kind == "truncate"
        if isinstance(scripted.body, list) and scripted.status == 200:  # a scripted stream
            self._send(200, _sse(scripted.body), "text/event-stream", scripted.headers, cut)
        elif scripted.body is not None or scripted.status != 200:
            self._send(scripted.status, _payload(scripted.body), "application/json", scripted.headers, cut)
        else:
            payload, ctype = self.owner._default_answer(rec)
            self._send(200, payload, ctype, scripted.headers, cut)


def main() -> None:
    """``python -m modelfactory.testing [port] [--fail-rate R] [--echo]``: serve until killed (the
    benchmarks use it; ``GET /_stats`` reports the requests seen and the failures injected)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("port", nargs="?", type=int, default=0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--echo", action="store_true")
    args = parser.parse_args()
    server = RecordingServer(port=args.port, fail_rate=args.fail_rate, echo=args.echo)
    print(server.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server._httpd.serve_forever()


if __name__ == "__main__":
    main()
