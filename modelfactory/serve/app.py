"""The FastAPI app serving one model (the package docstring, ``modelfactory.serve``, describes the routes)."""

import contextlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ..errors import MessageError, MissingDependencyError
from ..messages import ChatMessage, ChatMessageStreamDelta, normalize_messages, normalize_stop_sequences
from .dispatch import Dispatcher
from .protocol import (
    DONE,
    ChatCompletionRequest,
    HTTPError,
    StreamChunks,
    body_too_large,
    completion_body,
    error_for,
    parse_request,
    stream_finish_reason,
    stream_tool_calls,
)
from .settings import ServerSettings, served_name

__all__ = ["create_app", "import_deps"]

log = logging.getLogger("modelfactory.serve")


# --------------------------------------------------------------------------- the app


def create_app(model: Any, settings: ServerSettings | None = None) -> Any:
    """A FastAPI app serving ``model`` (needs ``modelfactory[serve]``)."""
    import_deps()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    settings = settings or ServerSettings()
    name = served_name(model, settings)
    key = settings.key()
    is_local = callable(getattr(model, "generate_batch", None)) or hasattr(model, "runtime")
    default_max = getattr(getattr(model, "spec", None), "max_new_tokens", None) or getattr(
        getattr(model, "spec", None), "max_tokens", None
    )
    dispatcher = Dispatcher(model, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await dispatcher.start()
        try:
            yield
        finally:
            await dispatcher.stop()

    app = FastAPI(title="modelfactory", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.dispatcher = dispatcher
    app.state.served_name = name

    def error_response(err: HTTPError) -> Any:
        headers = {"www-authenticate": "Bearer"} if err.status == 401 else None
        return JSONResponse(err.body, status_code=err.status, headers=headers)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> Any:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, exc: StarletteHTTPException) -> Any:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(
            HTTPError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code)
        )

    def check_key(given: str | None) -> None:
        if key is None:
            return
        if not given:
            raise HTTPError(401, "missing API key", code="invalid_api_key")
        if not hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8")):
            raise HTTPError(401, "incorrect API key", code="invalid_api_key")

    def bearer(request: Request) -> None:
        header = request.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        check_key(token.strip() if scheme.lower() == "bearer" else None)

    async def read_body(request: Request) -> ChatCompletionRequest:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                raise HTTPError(400, "invalid Content-Length header") from None
            if too_big:
                raise body_too_large(limit)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise body_too_large(limit)
        return parse_request(body)

    async def chat(request: Request, deployment: str | None) -> Any:
        req = await read_body(request)
        if deployment is None and req.model is not None and req.model != name:
            raise HTTPError(
                404,
                f"the model '{req.model}' does not exist: this server serves '{name}'",
                param="model",
                code="model_not_found",
            )
        if req.n is not None and req.n > 1:
            raise HTTPError(400, "n > 1 is not supported: send n requests", param="n", code="unsupported")
        try:
            messages = normalize_messages(req.messages)
            stop = normalize_stop_sequences(req.stop)
        except MessageError as exc:
            raise HTTPError(400, str(exc), param="stop" if "stop" in str(exc) else "messages") from None
        params = req.params()
        extra = {"response_format": req.response_format, "tools_to_call_from": req.tools}
        max_tokens = params.get("max_tokens") or default_max
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return await stream_response(
                cid, created, messages, stop, params, extra, include_usage, max_tokens
            )
        try:
            reply: ChatMessage = await dispatcher.complete(messages, stop, params, **extra)
        except Exception as exc:
            raise error_for(exc, is_local) from None
        return JSONResponse(completion_body(cid, created, name, reply, max_tokens))

    async def stream_response(
        cid: str,
        created: int,
        messages: list[dict[str, Any]],
        stop: list[str],
        params: dict[str, Any],
        extra: dict[str, Any],
        include_usage: bool,
        max_tokens: int | None,
    ) -> Any:
        deltas = dispatcher.stream(messages, stop, params, **extra)
        chunks = StreamChunks(cid, created, name, include_usage)

        # The first delta (or the error) before the headers: a model that fails at once gets a real status.
        try:
            first: ChatMessageStreamDelta | None = await deltas.__anext__()
        except StopAsyncIteration:
            first = None
        except Exception as exc:
            await deltas.aclose()
            raise error_for(exc, is_local) from None

        async def body() -> AsyncIterator[bytes]:
            usage = None
            tool_calls = False
            try:
                yield chunks.chunk({"role": "assistant", "content": ""})
                pending = [first] if first is not None else []
                while True:
                    if pending:
                        delta = pending.pop()
                    else:
                        try:
                            delta = await deltas.__anext__()
                        except StopAsyncIteration:
                            break
                    if delta.token_usage is not None:
                        usage = delta.token_usage
                    if delta.content:
                        yield chunks.chunk({"content": delta.content})
                    if delta.tool_calls:
                        tool_calls = True
                        yield chunks.chunk({"tool_calls": stream_tool_calls(delta.tool_calls)})
                yield chunks.chunk({}, stream_finish_reason(tool_calls, usage, max_tokens))
                if include_usage:
                    yield chunks.usage(usage)
            except Exception as exc:  # after the headers: an error event, as OpenAI sends them
                yield chunks.error(error_for(exc, is_local))
            finally:
                await deltas.aclose()
            yield DONE

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "model": name}

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        bearer(request)
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "modelfactory"}],
        }

    @app.get("/v1/models/{model_id:path}")
    async def model_info(model_id: str, request: Request) -> Any:
        bearer(request)
        if model_id != name:
            raise HTTPError(
                404,
                f"the model '{model_id}' does not exist: this server serves '{name}'",
                code="model_not_found",
            )
        return {"id": name, "object": "model", "created": 0, "owned_by": "modelfactory"}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        bearer(request)
        return await chat(request, None)

    @app.post("/openai/deployments/{deployment}/chat/completions")
    async def azure_chat_completions(deployment: str, request: Request) -> Any:
        check_key(request.headers.get("api-key"))
        if not request.query_params.get("api-version"):
            raise HTTPError(
                400,
                "missing the api-version query parameter",
                param="api-version",
                code="missing_api_version",
            )
        if deployment != name:
            raise HTTPError(
                404,
                f"the deployment '{deployment}' does not exist: this server serves '{name}'",
                code="DeploymentNotFound",
            )
        return await chat(request, deployment)

    return app


def import_deps() -> None:
    """fastapi and uvicorn, or a :class:`MissingDependencyError` naming the extra that brings them."""
    for package in ("fastapi", "uvicorn"):
        try:
            __import__(package)
        except ImportError:
            raise MissingDependencyError(package, "serve", "modelfactory serve") from None
