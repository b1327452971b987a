"""OpenAI Batch API (and Azure OpenAI's, which takes the same calls) through the openai SDK's
``client.files`` and ``client.batches``: a JSONL file of chat-completions requests is uploaded, a batch
created from it, and its output and error files read back when it ends.

``OpenAIServerModel.batch_adapter()`` and ``AzureOpenAIServerModel.batch_adapter()`` build it with their
own route: OpenAI's ``/v1/chat/completions`` with the model id, Azure's ``/chat/completions`` (its
documented batch endpoint, no ``/v1``) with the deployment name as the model.
``OpenAIResponsesModel.batch_adapter()`` builds it for ``/v1/responses``, with its own line body and reply
reader (``body`` / ``parse``): the same files, batches and output lines, a Responses API body in each."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from .._batchapi import CLOCK_SKEW_S, BatchProgress, Mark, crash_point
from ..messages import ChatMessage, GenerationRequest
from ..retry import is_retryable_status
from . import _openai_wire as wire

__all__ = ["OpenAIBatches"]

_ENDED = ("completed", "failed", "expired", "cancelled")
TOKEN_KEY = "modelfactory_token"  # the batch's metadata key holding a submission's idempotency token


def _file_name(token: str) -> str:
    """The input file's name: the submission's token, so that a re-run finds a file it did not record."""
    return f"modelfactory-batch-{token}.jsonl"


def _chat_body(model_name: str, req: GenerationRequest) -> dict[str, Any]:
    return wire.request_body(model_name, req, stream=False)


def _chat_reply(body: Any) -> ChatMessage:
    from openai.types.chat import ChatCompletion

    return wire.parse_completion(ChatCompletion.model_validate(body))


class OpenAIBatches:
    provider = "openai"
    max_requests = 50_000  # OpenAI's documented limits per batch: 50,000 requests, a 200 MB input file
    max_bytes = 190 * 1024 * 1024

    def __init__(
        self,
        model: Any,
        *,
        provider: str = "openai",
        url: str = "/v1/chat/completions",
        model_name: str | None = None,
        body: Callable[[str, GenerationRequest], dict[str, Any]] | None = None,
        parse: Callable[[Any], ChatMessage] | None = None,
    ) -> None:
        self.model = model
        self.provider = provider
        self.url = url  # each line's url and the batch's endpoint
        self.model_name = model.model_id if model_name is None else model_name  # each line's "model"
        # a line's body from (model name, request), and a 200 line's reply body as a ChatMessage: chat
        # completions unless the endpoint's model says otherwise
        self.body = body or _chat_body
        self.parse = parse or _chat_reply
        # The model's client has the SDK's retries off (the model owns its retry policy per call); these
        # few control calls get the SDK's own retries instead.
        self.client = model.client.with_options(max_retries=3)

    def line(self, custom_id: str, req: GenerationRequest) -> dict[str, Any]:
        body = self.body(self.model_name, req)
        return {"custom_id": custom_id, "method": "POST", "url": self.url, "body": body}

    def submit(
        self, lines: list[dict[str, Any]], on_file: Callable[[str], None], token: str, file_id: str | None
    ) -> str:
        try:
            if file_id is None:
                data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
                file = (_file_name(token), data)
                file_id = str(self.client.files.create(file=file, purpose="batch").id)
                crash_point("after_upload")
                on_file(file_id)
                crash_point("after_upload_record")
            batch = self.client.batches.create(
                input_file_id=file_id,
                endpoint=self.url,
                completion_window="24h",
                metadata={"created_by": "modelfactory", TOKEN_KEY: token},
            )
            crash_point("after_create")
        except Exception as exc:
            raise self.model._translate(exc) from exc
        return str(batch.id)

    def find_file(self, token: str, mark: Mark) -> str | None:
        name = _file_name(token)
        try:
            for f in self.client.files.list(purpose="batch"):
                if f.created_at < mark.since - CLOCK_SKEW_S:
                    return None
                if f.filename == name:
                    return str(f.id)
        except Exception:  # noqa: BLE001 - a server that cannot list its files: the caller uploads again
            return None
        return None

    def newest(self) -> str | None:
        return None  # find() matches the token in the batch's metadata: no mark needed

    def find(
        self, token: str | None, mark: Mark, requests: int, file_id: str | None, known: set[str]
    ) -> str | None:
        """By the token in the batch's ``metadata``, or its input file (newest first, back to the mark)."""
        try:
            for b in self.client.batches.list(limit=100):
                if b.created_at < mark.since - CLOCK_SKEW_S:
                    return None
                tag = (b.metadata or {}).get(TOKEN_KEY)
                if (token is not None and tag == token) or (
                    file_id is not None and b.input_file_id == file_id
                ):
                    return str(b.id)
        except Exception as exc:
            raise self.model._translate(exc) from exc
        return None

    def progress(self, batch_id: str) -> BatchProgress:
        try:
            b = self.client.batches.retrieve(batch_id)
        except Exception as exc:
            raise self.model._translate(exc) from exc
        counts = b.request_counts
        total = int(getattr(counts, "total", 0) or 0)
        done = int(getattr(counts, "completed", 0) or 0)
        failed = int(getattr(counts, "failed", 0) or 0)
        expired = max(0, total - done - failed) if b.status in ("expired", "cancelled") else 0
        message = None
        errors = getattr(getattr(b, "errors", None), "data", None)
        if b.status == "failed" and errors:
            message = "; ".join(str(getattr(e, "message", e)) for e in errors)
        return BatchProgress(b.status in _ENDED, str(b.status), total, done, failed, expired, message)

    def results(self, batch_id: str) -> Iterator[tuple[str, ChatMessage | Exception]]:
        try:
            b = self.client.batches.retrieve(batch_id)
            texts = [self.client.files.content(f).text for f in (b.output_file_id, b.error_file_id) if f]
        except Exception as exc:
            raise self.model._translate(exc) from exc
        for text in texts:
            for line in text.splitlines():
                if line.strip():
                    row = json.loads(line)
                    yield str(row["custom_id"]), self._reply(row)

    def _reply(self, row: dict[str, Any]) -> ChatMessage | Exception:
        response = row.get("response") or {}
        error = row.get("error")
        status = response.get("status_code")
        if status == 200 and not error:
            try:
                return self.parse(response.get("body"))
            except Exception as exc:
                return self.model._translate(exc)
        body = response.get("body") or {}
        err = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(error, dict):
            err = error
        message = str(err.get("message") if isinstance(err, dict) else err or "the batch request failed")
        return self.model._provider_error(
            message, status=status, retryable=isinstance(status, int) and is_retryable_status(status)
        )

    def cancel(self, batch_id: str) -> str:
        try:
            return str(self.client.batches.cancel(batch_id).status)
        except Exception as exc:
            raise self.model._translate(exc) from exc
