"""The OpenAI Files + Batches API, served: so any configured model stands in for a batch provider.

``POST /v1/files`` (multipart ``file``, ``purpose``), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``,
``DELETE /v1/files/{id}``,
``POST /v1/batches`` (``input_file_id``, ``endpoint`` = ``/v1/chat/completions``, ``completion_window``),
``GET /v1/batches``, ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. Objects have OpenAI's
documented shapes, so the openai SDK's ``client.files`` / ``client.batches`` work against it.

A batch runs in the background on the server's event loop, each line through the same path as a
``/v1/chat/completions`` request: a local model's lines share ``generate_batch`` calls (the dispatcher
batches requests that arrive together). Successful lines go to the output file, failed ones to the error
file, each ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``.
Files and batches live in memory: they end with the server. So that memory stays bounded, the stored files
together never pass ``server.max_files_bytes`` (an upload past it gets 413), ``DELETE /v1/files/{id}``
frees a file, and a batch's input file is freed when the batch ends (its lines were read at creation).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchStore", "StoredFile"]

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
WINDOW_S = 24 * 3600
MAX_FREED = 10_000  # freed files whose 404 still says why


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class StoredBatch:
    id: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, Any] | None
    total: int
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "validating"
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    times: dict[str, int | None] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    def body(self) -> dict[str, Any]:
        times = {
            k: self.times.get(k)
            for k in (
                "in_progress_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        }
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": ENDPOINT,
            "errors": None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + WINDOW_S,
            **times,
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
        }


@dataclass
class BatchStore:
    """The server's files and batches (in memory). ``created`` counts batch submissions (tests read it);
    ``freed`` says why a file that was once here is gone (for the 404)."""

    files: dict[str, StoredFile] = field(default_factory=dict)
    batches: dict[str, StoredBatch] = field(default_factory=dict)
    created: int = 0
    freed: dict[str, str] = field(default_factory=dict)

    @property
    def stored_bytes(self) -> int:
        return sum(len(f.data) for f in self.files.values())

    def add_file(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        f = StoredFile(f"file-{uuid.uuid4().hex[:24]}", filename, purpose, data)
        self.files[f.id] = f
        return f

    def delete_file(self, file_id: str, why: str) -> StoredFile | None:
        """Forget a file (its bytes freed), remembering ``why`` for a later lookup; None if unknown."""
        stored = self.files.pop(file_id, None)
        if stored is not None:
            self.freed[file_id] = why
            while len(self.freed) > MAX_FREED:  # the oldest reasons go: this must stay bounded too
                del self.freed[next(iter(self.freed))]
        return stored

    def release_input(self, batch: StoredBatch) -> None:
        """Free ``batch``'s input file once no batch still running reads it."""
        running = any(
            b.input_file_id == batch.input_file_id and b.status not in TERMINAL
            for b in self.batches.values()
            if b is not batch
        )
        if not running:
            self.delete_file(batch.input_file_id, f"freed when batch {batch.id} ended")

    def add_batch(
        self, input_file_id: str, window: str, metadata: dict[str, Any] | None, total: int
    ) -> StoredBatch:
        b = StoredBatch(f"batch_{uuid.uuid4().hex[:24]}", input_file_id, window, metadata, total)
        self.batches[b.id] = b
        self.created += 1
        return b


def parse_lines(data: bytes) -> list[dict[str, Any]]:
    """The input file's request lines, or ValueError naming the first bad line."""
    lines = []
    for number, line in enumerate(data.decode("utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"line {number} is not valid JSON: {exc}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("body"), dict) or "custom_id" not in obj:
            raise ValueError(f"line {number}: each line needs custom_id, method, url and a body object")
        if obj.get("url", ENDPOINT) != ENDPOINT:
            raise ValueError(f"line {number}: url {obj.get('url')!r} is not served; use {ENDPOINT}")
        lines.append(obj)
    ids = [str(o["custom_id"]) for o in lines]
    if len(set(ids)) != len(ids):
        raise ValueError("custom_id values must be unique within a batch")
    if not lines:
        raise ValueError("the input file has no request lines")
    return lines
