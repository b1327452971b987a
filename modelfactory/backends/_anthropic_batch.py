"""Anthropic Message Batches over plain httpx (no SDK needed), as documented:

``POST /v1/messages/batches`` ``{"requests": [{"custom_id", "params": <a Messages API request>}]}``,
``GET /v1/messages/batches/{id}`` (``processing_status``: in_progress | canceling | ended;
``request_counts``: processing, succeeded, errored, canceled, expired), ``GET .../{id}/results`` (JSONL of
``{"custom_id", "result": {"type": succeeded | errored | canceled | expired, "message" | "error"}}``) and
``POST .../{id}/cancel``; headers ``x-api-key`` and ``anthropic-version``.

``LiteLLMModel.batch_adapter()`` builds it for configs of ``anthropic/<model>``: the key is ``model.api_key``, else
``ANTHROPIC_API_KEY`` (sent only to api.anthropic.com, as the online path does); ``model.api_base``
points elsewhere (a proxy, a test server).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

from .._batchapi import CLOCK_SKEW_S, BatchProgress, Mark, crash_point
from ..errors import ConfigError, Problem
from ..messages import ChatMessage, GenerationRequest, TokenUsage
from ..retry import is_retryable_status

__all__ = ["AnthropicBatches"]

log = logging.getLogger("modelfactory.runner")

API_BASE = "https://api.anthropic.com"
VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # the Messages API requires max_tokens; litellm sends this default too
# what the Messages API takes (output_config: adaptive thinking's effort, modelfactory.reasoning)
_PARAMS = ("temperature", "top_p", "top_k", "metadata", "thinking", "output_config")
# Anthropic's error types a later try can get past (its 429, 500, 504, 529): such an item goes online.
# The others (invalid_request_error, authentication_error, billing_error, permission_error,
# not_found_error) would be refused online too: their error row stands.
_TRANSIENT = frozenset({"rate_limit_error", "api_error", "timeout_error", "overloaded_error"})


class AnthropicBatches:
    provider = "anthropic"
    max_requests = 100_000  # Anthropic's documented limits per batch: 100,000 requests, 256 MB
    max_bytes = 240 * 1024 * 1024

    def __init__(self, model: Any) -> None:
        import httpx

        spec = model.spec
        self.model = model
        self.model_name = model.model_id.split("/", 1)[1]
        base = (spec.api_base or os.environ.get("ANTHROPIC_BASE_URL") or API_BASE).rstrip("/")
        self.base = base.removesuffix("/v1")
        key = spec.api_key.get_secret_value() if spec.api_key is not None else ""
        if not key and urlparse(self.base).hostname == "api.anthropic.com":
            key = os.environ.get("ANTHROPIC_API_KEY", "")
        if not key:
            raise ConfigError(
                [
                    Problem(
                        "model.api_key",
                        f"no Anthropic API key for {self.base}",
                        "export ANTHROPIC_API_KEY=... (or model.api_key=${oc.env:MY_KEY_VAR})",
                    )
                ],
                title="runner.provider_batch",
            )
        headers = {"x-api-key": key, "anthropic-version": VERSION, "content-type": "application/json"}
        transport = httpx.HTTPTransport(retries=3)  # connection failures; the control calls are idempotent
        self.http = httpx.Client(
            base_url=self.base, headers=headers, timeout=spec.timeout, transport=transport
        )

    def line(self, custom_id: str, req: GenerationRequest) -> dict[str, Any]:
        system = [m["content"] for m in req.messages if m["role"] == "system"]
        messages = [
            {
                "role": "assistant" if m["role"] in ("assistant", "tool-call") else "user",
                "content": _blocks(m),
            }
            for m in req.messages
            if m["role"] != "system"
        ]
        params: dict[str, Any] = {
            "model": self.model_name,
            "max_tokens": int(req.params.get("max_tokens") or DEFAULT_MAX_TOKENS),
            "messages": messages,
        }
        if system:
            params["system"] = "\n\n".join(_text(s) for s in system)
        if req.provider_stop:
            params["stop_sequences"] = req.provider_stop
        params.update({k: req.params[k] for k in _PARAMS if req.params.get(k) is not None})
        return {"custom_id": custom_id, "params": params}

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        try:
            response = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise self.model._provider_error(f"cannot reach {self.base}: {exc}", retryable=True) from exc
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except Exception:
                message = response.text[:500]
            raise self.model._provider_error(
                f"{method} {path}: {message}",
                status=response.status_code,
                retryable=is_retryable_status(response.status_code),
            )
        return response

    def submit(
        self, lines: list[dict[str, Any]], on_file: Callable[[str], None], token: str, file_id: str | None
    ) -> str:
        """One call, no input file; Message Batches keep no metadata, so ``token`` stays ours alone."""
        batch_id = str(self._call("POST", "/v1/messages/batches", json={"requests": lines}).json()["id"])
        crash_point("after_create")
        return batch_id

    def find_file(self, token: str, mark: Mark) -> str | None:
        return None  # Message Batches take their requests in the create call: no input file

    def newest(self) -> str | None:
        """Message Batches keep no metadata: the newest batch before ours bounds what find() looks at."""
        data = self._call("GET", "/v1/messages/batches", params={"limit": 1}).json().get("data") or []
        return str(data[0]["id"]) if data else None

    def find(
        self, token: str | None, mark: Mark, requests: int, file_id: str | None, known: set[str]
    ) -> str | None:
        """The batch of ``requests`` requests created after ``mark.after`` (newest first) and not
        ``known``. Several match only when other processes of the workspace submitted same-sized
        batches at the same moment (a parallel sweep): the earliest is taken and the others named."""
        found: list[str] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = self._call("GET", "/v1/messages/batches", params=params).json()
            data = page.get("data") or []
            for b in data:
                if mark.after is not None and b.get("id") == mark.after:
                    return _earliest(found)
                if mark.after is None and _epoch(b.get("created_at")) < mark.since - CLOCK_SKEW_S:
                    return _earliest(found)
                counts = b.get("request_counts") or {}
                if b.get("id") not in known and sum(int(v or 0) for v in counts.values()) == requests:
                    found.append(str(b["id"]))
            if not page.get("has_more") or not data:
                return _earliest(found)
            params["after_id"] = page.get("last_id") or data[-1]["id"]

    def progress(self, batch_id: str) -> BatchProgress:
        b = self._call("GET", f"/v1/messages/batches/{batch_id}").json()
        c = b.get("request_counts") or {}
        total = sum(int(c.get(k) or 0) for k in ("processing", "succeeded", "errored", "canceled", "expired"))
        return BatchProgress(
            ended=b.get("processing_status") == "ended",
            status=str(b.get("processing_status")),
            total=total,
            done=int(c.get("succeeded") or 0),
            failed=int(c.get("errored") or 0),
            expired=int(c.get("expired") or 0) + int(c.get("canceled") or 0),
        )

    def results(self, batch_id: str) -> Iterator[tuple[str, ChatMessage | Exception]]:
        text = self._call("GET", f"/v1/messages/batches/{batch_id}/results").text
        for line in text.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            result = row.get("result") or {}
            kind = result.get("type")
            if kind == "succeeded":
                yield str(row["custom_id"]), _reply(result["message"])
            elif kind == "errored":
                err = (result.get("error") or {}).get("error") or result.get("error") or {}
                retryable = err.get("type") in _TRANSIENT
                yield (
                    str(row["custom_id"]),
                    self.model._provider_error(
                        f"{err.get('type', 'error')}: {err.get('message', 'the batch request failed')}",
                        retryable=retryable,
                    ),
                )
            # canceled / expired: no result; the runner counts them missing

    def cancel(self, batch_id: str) -> str:
        return str(
            self._call("POST", f"/v1/messages/batches/{batch_id}/cancel").json().get("processing_status")
        )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def _blocks(message: dict[str, Any]) -> Any:
    content = message.get("content")
    if isinstance(content, str) or content is None:
        return content or ""
    return [
        {"type": "text", "text": p["text"]}
        for p in content
        if isinstance(p, dict) and p.get("type") == "text"
    ]


def _reply(message: dict[str, Any]) -> ChatMessage:
    text = "".join(b.get("text", "") for b in message.get("content") or [] if b.get("type") == "text")
    thinking = "".join(
        b.get("thinking", "") for b in message.get("content") or [] if b.get("type") == "thinking"
    )
    return ChatMessage(
        role="assistant",
        content=text,
        token_usage=usage_of(message.get("usage") or {}),
        raw=message,
        reasoning_content=thinking or None,
    )


def usage_of(usage: dict[str, Any]) -> TokenUsage:
    """Anthropic's usage in our terms. Its ``input_tokens`` are only the prompt tokens after the last
    cache breakpoint; cache reads and writes are counted apart (``cache_read_input_tokens``,
    ``cache_creation_input_tokens``). Ours count every prompt token (OpenAI's convention), the cache
    reads among them as ``cached_input_tokens`` (billed at the cached rate), the writes as
    ``cache_write_input_tokens`` (billed at the write rate, 1.25x input for Anthropic's 5-minute cache)."""

    def n(key: str) -> int:
        value = usage.get(key)
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0

    cached = n("cache_read_input_tokens")
    return TokenUsage(
        input_tokens=n("input_tokens") + cached + n("cache_creation_input_tokens"),
        output_tokens=n("output_tokens"),
        cached_input_tokens=cached,
        cache_write_input_tokens=n("cache_creation_input_tokens"),
    )


def _epoch(stamp: Any) -> float:
    """An RFC 3339 time (``2024-08-20T18:37:24.100435Z``) in epoch seconds; 0 when unreadable."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return 0.0


def _earliest(found: list[str]) -> str | None:
    """The earliest created of ``found`` (listed newest first)."""
    if not found:
        return None
    if len(found) > 1:
        others = ", ".join(found[:-1])
        log.warning("several batches could be this run's; taking %s (also: %s)", found[-1], others)
    return found[-1]
