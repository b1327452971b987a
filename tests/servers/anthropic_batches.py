"""A local Anthropic Message Batches API, written from Anthropic's documented request/response shapes.

``POST /v1/messages/batches`` (``{"requests": [{"custom_id", "params"}]}``), ``GET
/v1/messages/batches/{id}``, ``GET /v1/messages/batches/{id}/results`` (JSONL),
``POST /v1/messages/batches/{id}/cancel``, ``GET /v1/messages/batches`` (``limit``, ``after_id``,
``before_id``: newest first; a batch has no metadata, as documented); every call needs ``x-api-key`` and ``anthropic-version``.

Each request is answered as a Messages API reply would be: the text ``echo: <last user text>`` cut
before the first of its ``stop_sequences`` (``stop_reason: stop_sequence``), usage in words. Tests
steer it: ``hold`` (an Event: batches stay ``in_progress`` until it is set), ``outcomes`` (custom_id ->
``errored`` (an ``invalid_request_error``) | ``errored:<type>`` (any of :data:`ERROR_MESSAGES`) |
``expired``, as a provider reports them), ``cache_read`` / ``cache_write`` (the prompt-cache
tokens every reply's usage reports), ``on_create`` (run once a batch is stored, before the reply: a
test kills its client there), and read ``submissions`` and ``bodies``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from modelfactory.testing import STOP_POLL_S

_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# Anthropic's error types (https://docs.anthropic.com/en/api/errors; the anthropic SDK's ErrorObject union,
# which tests/test_fakes_match_providers.py checks this against), each with a message as it might say it.
# An ``errored`` batch result carries one of them: ``outcomes[custom_id] = "errored:<type>"``.
ERROR_MESSAGES = {
    "invalid_request_error": "bad request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "your credit balance is too low",
    "permission_error": "your API key does not have permission to use the specified resource",
    "not_found_error": "the requested resource could not be found",
    "rate_limit_error": "your account has hit a rate limit",
    "api_error": "an unexpected error has occurred internal to Anthropic's systems",
    "timeout_error": "the request timed out while processing",
    "overloaded_error": "Anthropic's API is temporarily overloaded",
}


def answer(params: dict[str, Any], cache_read: int = 0, cache_write: int = 0) -> dict[str, Any]:
    """The Messages API reply to ``params`` (deterministic). ``cache_read`` / ``cache_write``: prompt
    tokens reported as read from / written to the prompt cache (Anthropic counts them apart from
    ``input_tokens``)."""
    last = params["messages"][-1]["content"]
    if isinstance(last, list):
        last = "".join(b.get("text", "") for b in last)
    text = f"echo: {last}"
    stop_reason, stop_sequence = "end_turn", None
    cuts = [(text.find(s), s) for s in params.get("stop_sequences") or [] if s in text]
    if cuts:
        at, stop_sequence = min(cuts)
        text, stop_reason = text[:at], "stop_sequence"
    words_in = sum(len(str(m["content"]).split()) for m in params["messages"]) + len(
        str(params.get("system", "")).split()
    )
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": words_in,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "output_tokens": len(text.split()),
        },
    }


def _stamp(epoch: float) -> str:
    """RFC 3339 with microseconds, as the API writes times: ``2024-08-20T18:37:24.100435Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}Z"


@dataclass
class FakeBatch:
    id: str
    requests: list[dict[str, Any]]
    created_at: float = field(default_factory=time.time)
    canceled: bool = False

    def ended(self, server: AnthropicBatchServer) -> bool:
        return self.canceled or server.hold.is_set()

    def result(self, server: AnthropicBatchServer, req: dict[str, Any]) -> dict[str, Any]:
        outcome = server.outcomes.get(req["custom_id"])
        if self.canceled and outcome is None:
            return {"type": "canceled"}
        if outcome == "expired":
            return {"type": "expired"}
        if outcome is not None and outcome.partition(":")[0] == "errored":
            kind = outcome.partition(":")[2] or "invalid_request_error"
            return {
                "type": "errored",
                "error": {"type": "error", "error": {"type": kind, "message": ERROR_MESSAGES[kind]}},
            }
        return {
            "type": "succeeded",
            "message": answer(req["params"], server.cache_read, server.cache_write),
        }

    def body(self, server: AnthropicBatchServer, base: str) -> dict[str, Any]:
        ended = self.ended(server)
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for req in self.requests:
            if not ended:
                counts["processing"] += 1
            else:
                counts[self.result(server, req)["type"]] += 1
        stamp = _stamp(self.created_at)
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else ("canceling" if self.canceled else "in_progress"),
            "request_counts": counts,
            "ended_at": stamp if ended else None,
            "created_at": stamp,
            "expires_at": stamp,
            "archived_at": None,
            "cancel_initiated_at": stamp if self.canceled else None,
            "results_url": f"{base}/v1/messages/batches/{self.id}/results" if ended else None,
        }


class AnthropicBatchServer:
    def __init__(self, api_key: str = "test-key") -> None:
        self.api_key = api_key
        self.hold = threading.Event()
        self.hold.set()  # batches end at once unless a test clears it
        self.outcomes: dict[str, str] = {}
        self.cache_read = 0  # prompt-cache tokens each reply reports (usage.cache_read_input_tokens)
        self.cache_write = 0  # (usage.cache_creation_input_tokens)
        self.batches: dict[str, FakeBatch] = {}
        self.bodies: list[dict[str, Any]] = []
        self.submissions = 0
        self.on_create: Callable[[], None] | None = None  # after a batch is stored, before the reply
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": STOP_POLL_S}, daemon=True
        )

    def __enter__(self) -> AnthropicBatchServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(server: AnthropicBatchServer) -> type[BaseHTTPRequestHandler]:
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

        def _error(self, status: int, kind: str, message: str) -> None:
            self._send(status, {"type": "error", "error": {"type": kind, "message": message}})

        def _authorized(self) -> bool:
            if self.headers.get("x-api-key") != server.api_key:
                self._error(401, "authentication_error", "invalid x-api-key")
                return False
            if not self.headers.get("anthropic-version"):
                self._error(400, "invalid_request_error", "anthropic-version header is required")
                return False
            return True

        def _batch(self, batch_id: str) -> FakeBatch | None:
            batch = server.batches.get(batch_id)
            if batch is None:
                self._error(404, "not_found_error", f"no batch {batch_id}")
            return batch

        def do_GET(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            url = urlparse(self.path)
            parts = url.path.strip("/").split("/")
            if parts == ["v1", "messages", "batches"]:
                return self._list({k: v[-1] for k, v in parse_qs(url.query).items()})
            if parts[:3] != ["v1", "messages", "batches"] or len(parts) not in (4, 5):
                return self._error(404, "not_found_error", self.path)
            batch = self._batch(parts[3])
            if batch is None:
                return
            if len(parts) == 4:
                return self._send(200, batch.body(server, server.url))
            if parts[4] != "results" or not batch.ended(server):
                return self._error(400, "invalid_request_error", "the batch has not ended")
            lines = [
                json.dumps({"custom_id": r["custom_id"], "result": batch.result(server, r)})
                for r in batch.requests
            ]
            self._send(200, ("\n".join(lines) + "\n").encode(), "application/binary")

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
            parts = self.path.strip("/").split("/")
            if parts == ["v1", "messages", "batches"]:
                return self._create(body)
            if parts[:3] == ["v1", "messages", "batches"] and len(parts) == 5 and parts[4] == "cancel":
                batch = self._batch(parts[3])
                if batch is not None:
                    batch.canceled = True
                    self._send(200, batch.body(server, server.url))
                return
            self._error(404, "not_found_error", self.path)

        def _list(self, query: dict[str, str]) -> None:
            """``GET /v1/messages/batches?limit=&after_id=&before_id=``: newest first, as documented."""
            limit = int(query.get("limit") or 20)
            if not 1 <= limit <= 1000:
                return self._error(400, "invalid_request_error", "limit: from 1 to 1000")
            ordered = list(reversed(server.batches.values()))  # created in this order
            ids = [b.id for b in ordered]
            if query.get("after_id") in ids:
                ordered = ordered[ids.index(query["after_id"]) + 1 :]
            elif query.get("before_id") in ids:
                ordered = ordered[: ids.index(query["before_id"])][-limit:]
            page = [b.body(server, server.url) for b in ordered[:limit]]
            first, last = (page[0]["id"], page[-1]["id"]) if page else (None, None)
            self._send(
                200, {"data": page, "has_more": len(ordered) > limit, "first_id": first, "last_id": last}
            )

        def _create(self, body: dict[str, Any]) -> None:
            requests = body.get("requests")
            if not isinstance(requests, list) or not requests:
                return self._error(400, "invalid_request_error", "requests: a non-empty list is required")
            seen = set()
            for i, r in enumerate(requests):
                cid, params = r.get("custom_id"), r.get("params")
                if not isinstance(cid, str) or not _CUSTOM_ID.match(cid) or cid in seen:
                    return self._error(
                        400, "invalid_request_error", f"requests.{i}.custom_id: invalid or duplicate"
                    )
                seen.add(cid)
                if not isinstance(params, dict) or not {"model", "max_tokens", "messages"} <= set(params):
                    return self._error(
                        400, "invalid_request_error", f"requests.{i}.params: model, max_tokens, messages"
                    )
                if any(m.get("role") not in ("user", "assistant") for m in params["messages"]):
                    return self._error(
                        400, "invalid_request_error", f"requests.{i}: roles are user or assistant"
                    )
            server.submissions += 1
            server.bodies.append(body)
            batch = FakeBatch(f"msgbatch_{uuid.uuid4().hex[:24]}", requests)
            server.batches[batch.id] = batch
            if server.on_create is not None:
                server.on_create()
            self._send(200, batch.body(server, server.url))

    return Handler
