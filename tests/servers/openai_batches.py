"""A local OpenAI and Azure OpenAI Files + Batches API, written from the providers' documented shapes.

OpenAI: ``POST /v1/files`` (multipart ``file``, ``purpose=batch``), ``GET /v1/files/{id}/content``,
``POST /v1/batches`` (``input_file_id``, ``endpoint=/v1/chat/completions``, ``completion_window=24h``),
``GET /v1/batches/{id}``, ``GET /v1/batches`` (``limit``, ``after``: newest first, cursor pages), ``POST
/v1/batches/{id}/cancel``, ``GET /v1/files`` (``purpose``, ``limit``, ``after``: the input files, newest
first); a batch keeps the ``metadata`` it was created with; ``Authorization: Bearer <key>``; each input
line ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``.

Azure OpenAI: the same calls under ``/openai/`` (``/openai/files``, ``/openai/batches``...), each with an
``api-version`` query parameter and an ``api-key`` header; the batch endpoint and every line's url are
``/chat/completions``, and a line's ``body.model`` names a global-batch *deployment* (an unknown one
fails that line with 404 ``DeploymentNotFound``, as Azure reports it in the error file).

Each line is answered as a chat completion would be: ``echo: <last user text>`` cut before the first of
its ``stop``, usage in words (``prompt_tokens_details.cached_tokens`` = :attr:`cached_tokens`).
OpenAI's ``/v1/responses`` is a batch endpoint too (each line's url then ``/v1/responses``, its body a
Responses API request): a line is answered as the Responses API would (:meth:`BatchAPIServer.response`):
the same text, uncut (that API takes no ``stop``), a reasoning summary when the body asks for
``reasoning``, usage in words with ``input_tokens_details.cached_tokens``.

Tests steer it: ``hold`` (an Event: while clear, batches stay ``in_progress``), ``end_after_polls``
(a batch completes at its n-th status poll once ``hold`` is set: 1 = the first poll after submission).
``on_upload`` / ``on_create`` run once a file or a batch is stored, before the reply goes out (a test
kills its client there: a reply lost in flight). They read ``uploads``, ``events`` (``("submit" | "end", batch_id)`` in the order they happened, across every client),
``batches``, ``requests`` (every call: method, path, query, headers) and ``lines`` (every input line).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from modelfactory.testing import STOP_POLL_S

OPENAI_ENDPOINT = "/v1/chat/completions"
RESPONSES_ENDPOINT = "/v1/responses"
AZURE_ENDPOINT = "/chat/completions"


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names


@dataclass
class FakeBatch:
    id: str
    input_file_id: str
    endpoint: str
    lines: list[dict[str, Any]]
    azure: bool
    metadata: dict[str, str] | None = None
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "validating"
    polls: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None

    def body(self) -> dict[str, Any]:
        ended = self.status in ("completed", "cancelled")
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.created_at,
            "expires_at": self.created_at + 24 * 3600,
            "finalizing_at": self.created_at if ended else None,
            "completed_at": int(time.time()) if self.status == "completed" else None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": int(time.time()) if self.status == "cancelled" else None,
            "request_counts": {
                "total": len(self.lines),
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }


class BatchAPIServer:
    def __init__(self, api_key: str = "sk-fake", deployments: tuple[str, ...] = ()) -> None:
        self.api_key = api_key
        self.deployments = set(deployments)  # Azure: the batch deployments that exist
        self.hold = threading.Event()
        self.hold.set()
        self.end_after_polls = 1
        self.cached_tokens = 0
        self.files: dict[str, bytes] = {}
        self.uploaded: list[dict[str, Any]] = []  # the input files' objects, in upload order
        self.batches: dict[str, FakeBatch] = {}
        self.events: list[tuple[str, str]] = []
        self.requests: list[Call] = []
        self.lines: list[dict[str, Any]] = []
        self.uploads = 0  # input files received
        # called once a file or a batch is stored, before the reply is sent (a test kills its client here)
        self.on_upload: Callable[[], None] | None = None
        self.on_create: Callable[[], None] | None = None
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": STOP_POLL_S}, daemon=True
        )

    def __enter__(self) -> BatchAPIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def submissions(self) -> int:
        return sum(1 for kind, _ in self.events if kind == "submit")

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat completion a line's body gets (deterministic)."""
        last = body["messages"][-1]["content"]
        if isinstance(last, list):
            last = "".join(p.get("text", "") for p in last)
        text = f"echo: {last}"
        stops = body.get("stop") or []
        cuts = [text.find(s) for s in ([stops] if isinstance(stops, str) else stops) if s in text]
        finish = "stop"
        if cuts:
            text = text[: min(cuts)]
        words_in = sum(len(str(m["content"]).split()) for m in body["messages"])
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            ],
            "usage": {
                "prompt_tokens": words_in,
                "completion_tokens": len(text.split()),
                "total_tokens": words_in + len(text.split()),
                "prompt_tokens_details": {"cached_tokens": min(self.cached_tokens, words_in)},
            },
        }

    def response(self, body: dict[str, Any]) -> dict[str, Any]:
        """The Responses API reply a ``/v1/responses`` line's body gets (deterministic)."""
        items = (
            body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
        )
        said = [str(i.get("content", "")) for i in items if isinstance(i, dict) and i.get("role") == "user"]
        text = f"echo: {said[-1] if said else ''}"
        words_in = sum(len(str(i.get("content") or i.get("output") or "").split()) for i in items)
        output: list[dict[str, Any]] = []
        reasoning = isinstance(body.get("reasoning"), dict)
        if reasoning:
            output.append(
                {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "thought"}]}
            )
        output.append(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
        words_out = len(text.split()) + (2 if reasoning else 0)
        return {
            "id": f"resp_{uuid.uuid4().hex[:12]}",
            "object": "response",
            "created_at": int(time.time()),
            "model": body["model"],
            "status": "completed",
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": words_in,
                "input_tokens_details": {
                    "cached_tokens": min(self.cached_tokens, words_in),
                    "cache_write_tokens": 0,
                },
                "output_tokens": words_out,
                "output_tokens_details": {"reasoning_tokens": 2 if reasoning else 0},
                "total_tokens": words_in + words_out,
            },
        }

    def finish(self, batch: FakeBatch) -> None:
        """Run every line of ``batch``; write its output and error files (under the lock)."""
        out, err = [], []
        for line in batch.lines:
            model = line["body"].get("model")
            if batch.azure and model not in self.deployments:
                status, body = (
                    404,
                    {
                        "error": {
                            "code": "DeploymentNotFound",
                            "message": f"The API deployment for this resource does not exist: {model}",
                        }
                    },
                )
            elif batch.endpoint == RESPONSES_ENDPOINT:
                status, body = 200, self.response(line["body"])
            else:
                status, body = 200, self.answer(line["body"])
            row = {
                "id": f"batch_req_{uuid.uuid4().hex[:12]}",
                "custom_id": line["custom_id"],
                "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": body},
                "error": None,
            }
            (out if status == 200 else err).append(json.dumps(row))
        batch.completed, batch.failed = len(out), len(err)
        if out:
            batch.output_file_id = self._store(("\n".join(out) + "\n").encode())
        if err:
            batch.error_file_id = self._store(("\n".join(err) + "\n").encode())
        batch.status = "completed"
        self.events.append(("end", batch.id))

    def _store(self, data: bytes) -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.files[file_id] = data
        return file_id


def _multipart(content_type: str, data: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``{field: (filename, bytes)}`` of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + data
    )
    out = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        out[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return out


def _handler(server: BatchAPIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, code: str | None = None) -> None:
            err = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
            self._send(status, {"error": err})

        def _route(self) -> tuple[list[str], bool] | None:
            """The path parts after the API prefix and whether it is the Azure flavour; None once an
            error (auth, api-version, unknown path) has been answered."""
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            headers = {k.lower(): v for k, v in self.headers.items()}
            with server.lock:
                server.requests.append(Call(self.command, url.path, query, headers))
            parts = url.path.strip("/").split("/")
            if parts[:1] == ["openai"]:
                if not query.get("api-version"):
                    self._error(404, "Resource not found: the api-version query parameter is required")
                    return None
                if headers.get("api-key") != server.api_key:
                    self._error(401, "Access denied due to invalid subscription key", "401")
                    return None
                return parts[1:], True
            if parts[:1] == ["v1"]:
                if headers.get("authorization") != f"Bearer {server.api_key}":
                    self._error(401, "Incorrect API key provided", "invalid_api_key")
                    return None
                return parts[1:], False
            self._error(404, f"no route {url.path}")
            return None

        def _batch(self, batch_id: str) -> FakeBatch | None:
            batch = server.batches.get(batch_id)
            if batch is None:
                self._error(404, f"No batch found with id '{batch_id}'", "not_found")
            return batch

        def do_GET(self) -> None:  # noqa: N802
            routed = self._route()
            if routed is None:
                return
            parts, _ = routed
            query = {k: v[-1] for k, v in parse_qs(urlparse(self.path).query).items()}
            if parts[:1] == ["files"] and len(parts) == 3 and parts[2] == "content":
                data = server.files.get(parts[1])
                if data is None:
                    return self._error(404, f"No such File object: {parts[1]}")
                return self._send(200, data, "application/octet-stream")
            if parts == ["batches"]:
                return self._list(query)
            if parts == ["files"]:
                return self._files(query)
            if parts[:1] == ["batches"] and len(parts) == 2:
                with server.lock:
                    batch = self._batch(parts[1])
                    if batch is None:
                        return
                    if batch.status in ("validating", "in_progress"):
                        batch.status = "in_progress"
                        if server.hold.is_set():
                            batch.polls += 1
                            if batch.polls >= server.end_after_polls:
                                server.finish(batch)
                    body = batch.body()
                return self._send(200, body)
            self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:  # noqa: N802
            routed = self._route()
            if routed is None:
                return
            parts, azure = routed
            data = self.rfile.read(int(self.headers.get("content-length") or 0))
            if parts == ["files"]:
                fields = _multipart(self.headers.get("content-type", ""), data)
                if fields.get("purpose", (None, b""))[1] != b"batch" or "file" not in fields:
                    return self._error(400, "a file with purpose 'batch' is required")
                filename, content = fields["file"]
                with server.lock:
                    file_id = server._store(content)
                    server.uploads += 1
                    info = {
                        "id": file_id,
                        "object": "file",
                        "bytes": len(content),
                        "created_at": int(time.time()),
                        "filename": filename or "batch.jsonl",
                        "purpose": "batch",
                        "status": "processed",
                        "status_details": None,
                    }
                    server.uploaded.append(info)
                if server.on_upload is not None:
                    server.on_upload()
                return self._send(200, info)
            if parts == ["batches"]:
                return self._create(json.loads(data or b"{}"), azure)
            if parts[:1] == ["batches"] and len(parts) == 3 and parts[2] == "cancel":
                with server.lock:
                    batch = self._batch(parts[1])
                    if batch is None:
                        return
                    batch.status = "cancelled"
                    body = batch.body()
                return self._send(200, body)
            self._error(404, f"no route {self.path}")

        def _list(self, query: dict[str, str]) -> None:
            """``GET /batches?limit=&after=``: newest first, a cursor page as OpenAI pages lists."""
            limit = int(query.get("limit") or 20)
            if not 1 <= limit <= 100:
                return self._error(400, "limit must be between 1 and 100")
            with server.lock:
                ordered = list(reversed(server.batches.values()))  # created in this order
                ids = [b.id for b in ordered]
                start = ids.index(query["after"]) + 1 if query.get("after") in ids else 0
                page = [b.body() for b in ordered[start : start + limit]]
                more = start + limit < len(ordered)
            first, last = (page[0]["id"], page[-1]["id"]) if page else (None, None)
            self._send(
                200, {"object": "list", "data": page, "first_id": first, "last_id": last, "has_more": more}
            )

        def _files(self, query: dict[str, str]) -> None:
            """``GET /files?purpose=&limit=&after=``: the uploaded input files, newest first, cursor pages."""
            limit = int(query.get("limit") or 10000)
            with server.lock:
                files = [f for f in reversed(server.uploaded) if query.get("purpose") in (None, f["purpose"])]
            ids = [f["id"] for f in files]
            start = ids.index(query["after"]) + 1 if query.get("after") in ids else 0
            page = files[start : start + limit]
            first, last = (page[0]["id"], page[-1]["id"]) if page else (None, None)
            more = start + limit < len(files)
            self._send(
                200, {"object": "list", "data": page, "first_id": first, "last_id": last, "has_more": more}
            )

        def _create(self, body: dict[str, Any], azure: bool) -> None:
            served = (AZURE_ENDPOINT,) if azure else (OPENAI_ENDPOINT, RESPONSES_ENDPOINT)
            endpoint = str(body.get("endpoint"))
            if endpoint not in served:
                return self._error(400, f"endpoint must be one of {served}, got {body.get('endpoint')!r}")
            if body.get("completion_window") != "24h":
                return self._error(400, "completion_window must be 24h")
            with server.lock:
                data = server.files.get(str(body.get("input_file_id")))
                if data is None:
                    return self._error(400, f"no input file {body.get('input_file_id')}")
                lines = [json.loads(x) for x in data.decode().splitlines() if x.strip()]
                for i, line in enumerate(lines):
                    if line.get("method") != "POST" or line.get("url") != endpoint:
                        return self._error(400, f"line {i + 1}: method POST and url {endpoint} required")
                    if not isinstance(line.get("body"), dict) or "custom_id" not in line:
                        return self._error(400, f"line {i + 1}: custom_id and body required")
                server.lines += lines
                metadata = body.get("metadata")
                if metadata is not None and not (
                    isinstance(metadata, dict)
                    and len(metadata) <= 16
                    and all(
                        isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items()
                    )
                ):
                    return self._error(400, "metadata: up to 16 string pairs (keys 64, values 512 chars)")
                batch = FakeBatch(
                    f"batch_{uuid.uuid4().hex[:24]}",
                    str(body["input_file_id"]),
                    endpoint,
                    lines,
                    azure,
                    metadata,
                    created_at=int(time.time()),
                )
                server.batches[batch.id] = batch
                server.events.append(("submit", batch.id))
                out = batch.body()
            if server.on_create is not None:
                server.on_create()
            self._send(200, out)

    return Handler
