"""A real OpenAI-compatible HTTP server on 127.0.0.1 that records every request it gets.

Tests use it to assert exactly what goes over the wire (path, query, headers, JSON body) and to script
replies: a canned completion by default, SSE chunks when ``stream`` is set, or any status/body queued
with :meth:`RecordingServer.enqueue`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or the raw text when it was not JSON
    raw: bytes = b""


@dataclass
class Scripted:
    status: int = 200
    body: Any = None  # dict -> JSON; str/bytes sent as-is; None -> the default completion
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class RecordingServer:
    def __init__(
        self, reply: str = "Hello from the recording server", host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.reply = reply
        self.usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        self.requests: list[Recorded] = []
        self._script: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
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
        self, status: int = 200, body: Any = None, headers: dict[str, str] | None = None, delay: float = 0.0
    ) -> None:
        self._script.append(Scripted(status, body, headers or {}, delay))

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
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": self.reply}, "finish_reason": "stop"}
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
            "content": [{"type": "text", "text": self.reply}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.usage["prompt_tokens"],
                "output_tokens": self.usage["completion_tokens"],
            },
        }

    def chunks(self, body: Any) -> list[dict[str, Any]]:
        model = body.get("model", "unknown") if isinstance(body, dict) else "unknown"
        base = {"id": "chatcmpl-rec", "object": "chat.completion.chunk", "created": 0, "model": model}
        pieces = [self.reply[i : i + 3] for i in range(0, len(self.reply), 3)]
        out = [
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": p}, "finish_reason": None}
                ],
            }
            for p in pieces
        ]
        out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        out.append({**base, "choices": [], "usage": dict(self.usage)})
        return out

    # -------------------------------------------------------------- HTTP
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
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
                with server._lock:
                    server.requests.append(rec)
                return rec

            def _send(self, status: int, payload: bytes, ctype: str, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(payload)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._record()
                body = {"object": "list", "data": [{"id": "recorded-model", "object": "model"}]}
                self._send(200, json.dumps(body).encode(), "application/json", {})

            def do_POST(self) -> None:
                rec = self._record()
                with server._lock:
                    scripted = server._script.popleft() if server._script else Scripted()
                if scripted.delay:
                    time.sleep(scripted.delay)
                if scripted.body is not None or scripted.status != 200:
                    body = scripted.body if scripted.body is not None else {"error": {"message": "scripted"}}
                    payload = (
                        body
                        if isinstance(body, bytes)
                        else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
                    )
                    self._send(scripted.status, payload, "application/json", scripted.headers)
                    return
                if rec.path.endswith("/v1/messages"):  # Anthropic's Messages API (litellm anthropic/...)
                    self._send(
                        200,
                        json.dumps(server.anthropic_message(rec.body)).encode(),
                        "application/json",
                        scripted.headers,
                    )
                    return
                if isinstance(rec.body, dict) and rec.body.get("stream"):
                    data = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in server.chunks(rec.body))
                    data += b"data: [DONE]\n\n"
                    self._send(200, data, "text/event-stream", scripted.headers)
                    return
                self._send(
                    200,
                    json.dumps(server.completion(rec.body)).encode(),
                    "application/json",
                    scripted.headers,
                )

        return Handler


def main() -> None:
    """``python -m tests.servers.recording [port]``: serve until killed (the benchmarks use it)."""
    import sys

    server = RecordingServer(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(server.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server._httpd.serve_forever()


if __name__ == "__main__":
    main()
