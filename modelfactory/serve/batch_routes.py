"""Route handlers of the Files + Batches API (the store and the shapes are in :mod:`.batches`).

What grows with the upload (a batch's JSON body, its input file's lines, the output file) is parsed and
built in the server's prep threads, never on the event loop: ``/health`` and chat requests keep being
answered while a 200 MB batch file is read."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..secrets import scrub_tree
from .batches import ENDPOINT, TERMINAL, StoredBatch, parse_lines
from .protocol import ChatCompletionRequest, HTTPError, parse_request
from .routes import _authorized, body_chunks, body_deadline, complete, receive_body
from .state import ServeState

__all__ = ["install"]


def install(app: FastAPI) -> None:
    app.add_api_route("/v1/files", upload_file, methods=["POST"])
    app.add_api_route("/v1/files/{file_id}", file_info, methods=["GET"])
    app.add_api_route("/v1/files/{file_id}", delete_file, methods=["DELETE"])
    app.add_api_route("/v1/files/{file_id}/content", file_content, methods=["GET"])
    app.add_api_route("/v1/batches", create_batch, methods=["POST"])
    app.add_api_route("/v1/batches", list_batches, methods=["GET"])
    app.add_api_route("/v1/batches/{batch_id}", batch_info, methods=["GET"])
    app.add_api_route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"])


def _state(request: Request) -> ServeState:
    return _authorized(request)


MULTIPART_SLACK = 1 << 20  # room for the multipart envelope around a file of max_batch_file_bytes


async def upload_file(request: Request) -> Any:
    """``POST /v1/files``: the multipart body parsed as it arrives, under the same deadline as any body
    (``server.body_timeout_s``) and refused with 413 the moment it passes ``server.max_batch_file_bytes``
    (plus the envelope): a chunked 60 MB upload to a 1 MB server is cut after about 2 MB, not read whole."""
    state = _state(request)
    limit = state.settings.max_batch_file_bytes
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPError(400, "POST /v1/files takes a multipart/form-data body", param="file")

    def too_large(_: int) -> HTTPError:
        return HTTPError(413, f"file over {limit} bytes (server.max_batch_file_bytes)", code="file_too_large")

    from starlette.formparsers import MultiPartException, MultiPartParser

    parser = MultiPartParser(request.headers, body_chunks(request, limit + MULTIPART_SLACK, too_large))
    try:
        async with body_deadline(state, request):
            form = await parser.parse()
    except MultiPartException as exc:  # (the parser closes what it spooled when the body is cut short)
        raise HTTPError(400, f"the multipart body is not valid: {exc.message}", param="file") from None
    try:
        upload = form.get("file")
        purpose = str(form.get("purpose") or "")
        if upload is None or isinstance(upload, str):
            raise HTTPError(400, "missing the multipart field 'file'", param="file")
        if purpose != "batch":
            raise HTTPError(400, f"purpose {purpose!r} is not served: use 'batch'", param="purpose")
        if (upload.size or 0) > limit:
            raise too_large(limit)
        _check_room(state, upload.size or 0)  # before the spooled file is read into memory
        data = await upload.read()
    finally:
        await form.close()
    # Checked again with no await between the check and the store: two uploads cannot both pass it.
    _check_room(state, len(data))
    stored = state.batches.add_file(upload.filename or "batch.jsonl", purpose, data)
    return stored.body()


def _check_room(state: ServeState, size: int) -> None:
    held = state.batches.stored_bytes
    if held + size > state.settings.max_files_bytes:
        raise HTTPError(
            413,
            f"the server already holds {held} bytes of files and this one has {size}: over "
            f"server.max_files_bytes ({state.settings.max_files_bytes}); delete files you no longer "
            "need (DELETE /v1/files/{id})",
            code="files_full",
        )


def _file(state: ServeState, file_id: str) -> Any:
    stored = state.batches.files.get(file_id)
    if stored is None:
        why = state.batches.freed.get(file_id)
        detail = f" (it was {why}; upload it again)" if why else ""
        raise HTTPError(404, f"no file with id '{file_id}'{detail}", param="file_id", code="not_found")
    return stored


async def delete_file(file_id: str, request: Request) -> Any:
    """``DELETE /v1/files/{id}``: the file's bytes freed (OpenAI's answer shape)."""
    state = _state(request)
    _file(state, file_id)
    state.batches.delete_file(file_id, "deleted")
    return {"id": file_id, "object": "file", "deleted": True}


async def file_info(file_id: str, request: Request) -> Any:
    return _file(_state(request), file_id).body()


async def file_content(file_id: str, request: Request) -> Any:
    return Response(_file(_state(request), file_id).data, media_type="application/jsonl")


async def create_batch(request: Request) -> Any:
    state = _state(request)
    loop = asyncio.get_running_loop()
    raw = await receive_body(state, request, state.settings.max_body_bytes)
    body = await loop.run_in_executor(state.pool_for(len(raw)), _json_object, raw)
    if body.get("endpoint") != ENDPOINT:
        raise HTTPError(
            400, f"endpoint {body.get('endpoint')!r} is not served: use {ENDPOINT}", param="endpoint"
        )
    if body.get("completion_window") != "24h":
        raise HTTPError(400, "completion_window must be '24h'", param="completion_window")
    stored = _file(state, str(body.get("input_file_id")))
    lines = await loop.run_in_executor(
        state.pool_for(len(stored.data)), _prepared_lines, stored.id, stored.data
    )
    batch = state.batches.add_batch(stored.id, "24h", body.get("metadata"), len(lines))
    batch.task = asyncio.get_running_loop().create_task(_run(state, batch, lines))
    return batch.body()


async def list_batches(request: Request) -> Any:
    state = _state(request)
    data = [b.body() for b in reversed(state.batches.batches.values())]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": False}


def _batch(state: ServeState, batch_id: str) -> StoredBatch:
    batch = state.batches.batches.get(batch_id)
    if batch is None:
        raise HTTPError(404, f"no batch with id '{batch_id}'", param="batch_id", code="not_found")
    return batch


async def batch_info(batch_id: str, request: Request) -> Any:
    return _batch(_state(request), batch_id).body()


async def cancel_batch(batch_id: str, request: Request) -> Any:
    batch = _batch(_state(request), batch_id)
    if batch.status in TERMINAL:
        return JSONResponse(
            {
                "error": {
                    "message": f"batch {batch_id} is already {batch.status}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
            status_code=409,
        )
    batch.status = "cancelling"
    batch.times["cancelling_at"] = int(time.time())
    if batch.task is not None:
        batch.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await batch.task
    return batch.body()


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise HTTPError(400, "the body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "the body must be a JSON object", code="invalid_json")
    return body


Line = tuple[dict[str, Any], ChatCompletionRequest | HTTPError]


def _prepared_lines(file_id: str, data: bytes) -> list[Line]:
    """The input file's lines, each with its parsed request or the 400 it gets (in a prep thread: the
    file may hold 50,000 lines); a file that is not a batch input file at all is a 400 for the batch."""
    try:
        lines = parse_lines(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise HTTPError(400, f"input file {file_id}: {exc}", param="input_file_id") from None
    out: list[Line] = []
    for line in lines:
        try:
            out.append((line, parse_request(json.dumps(line["body"]).encode())))
        except HTTPError as exc:
            out.append((line, exc))
    return out


async def _run(state: ServeState, batch: StoredBatch, lines: list[Line]) -> None:
    """Every line through :func:`.routes.complete`; the output and error files written at the end (also
    after a cancel, with what had finished)."""
    batch.status = "in_progress"
    batch.times["in_progress_at"] = int(time.time())
    out: list[str] = []
    err: list[str] = []
    room = asyncio.Semaphore(max(state.settings.max_concurrency, state.settings.max_batch_size))

    redact = state.redactor()

    async def one(line: dict[str, Any], req: ChatCompletionRequest | HTTPError) -> None:
        async with room:
            request_id = f"req_{uuid.uuid4().hex[:24]}"
            try:
                if isinstance(req, HTTPError):
                    raise req
                body, status = await complete(state, req), 200
            except HTTPError as exc:
                body, status = scrub_tree(exc.body, redact), exc.status
            row = {
                "id": f"batch_req_{uuid.uuid4().hex[:24]}",
                "custom_id": line["custom_id"],
                "response": {"status_code": status, "request_id": request_id, "body": body},
                "error": None,
            }
            if status == 200:
                batch.completed += 1
                out.append(json.dumps(row))
            else:
                batch.failed += 1
                err.append(json.dumps(row))

    cancelled = False
    try:
        await asyncio.gather(*(one(line, req) for line, req in lines))
    except asyncio.CancelledError:
        cancelled = True
    batch.status = "finalizing"
    batch.times["finalizing_at"] = int(time.time())
    loop = asyncio.get_running_loop()
    if out:
        data = await loop.run_in_executor(state.bulk_pool, _jsonl, out)
        batch.output_file_id = state.batches.add_file(f"{batch.id}_output.jsonl", "batch_output", data).id
    if err:
        data = await loop.run_in_executor(state.bulk_pool, _jsonl, err)
        batch.error_file_id = state.batches.add_file(f"{batch.id}_error.jsonl", "batch_output", data).id
    now = int(time.time())
    if cancelled:
        batch.status, batch.times["cancelled_at"] = "cancelled", now
    else:
        batch.status, batch.times["completed_at"] = "completed", now
    state.batches.release_input(batch)  # its lines were read at creation: its bytes are not needed now


def _jsonl(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")
