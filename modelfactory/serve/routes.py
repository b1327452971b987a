"""The routes, one small handler each, reading the served model from ``request.app.state.serve``.

Imported only by :func:`.app.create_app`, once fastapi is known to be installed (this module imports it).
"""

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import MessageError, UnsupportedFeatureError
from ..messages import ChatMessage, normalize_messages, normalize_stop_sequences
from ..secrets import scrub_tree
from .chat_stream import stream_response
from .protocol import (
    ChatCompletionRequest,
    HTTPError,
    StreamChunks,
    body_too_large,
    completion_body,
    context_length_exceeded,
    error_for,
    logprobs_body,
    parse_request,
)
from .state import ServeState, context_length
from .toolstream import ToolCallStream

__all__ = ["install"]

log = logging.getLogger("modelfactory.serve")


def install(app: FastAPI) -> None:
    """Put the routes and the OpenAI-style error handlers on ``app``."""
    app.add_exception_handler(HTTPError, _http_error)
    app.add_exception_handler(StarletteHTTPException, _starlette_error)
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", model_info, methods=["GET"])
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route(
        "/openai/deployments/{deployment}/chat/completions", azure_chat_completions, methods=["POST"]
    )


# --------------------------------------------------------------------------- routes


async def health(request: Request) -> Any:
    return {"status": "ok", "model": _state(request).name}


async def list_models(request: Request) -> Any:
    state = _authorized(request)
    return {"object": "list", "data": [_model_card(name) for name in state.names]}


async def model_info(model_id: str, request: Request) -> Any:
    state = _authorized(request)
    if not state.serves(model_id):
        raise HTTPError(
            404,
            f"the model '{model_id}' does not exist: this server serves {state.described()}",
            code="model_not_found",
        )
    return _model_card(model_id)


async def chat_completions(request: Request) -> Any:
    return await _chat(_authorized(request), request, None)


async def azure_chat_completions(deployment: str, request: Request) -> Any:
    """Azure OpenAI's route: the key in ``api-key``, the model as the deployment, ``api-version`` required."""
    state = _state(request)
    _check_key(state, request.headers.get("api-key"))
    if not request.query_params.get("api-version"):
        raise HTTPError(
            400,
            "missing the api-version query parameter",
            param="api-version",
            code="missing_api_version",
        )
    if not state.serves(deployment):
        raise HTTPError(
            404,
            f"the deployment '{deployment}' does not exist: this server serves {state.described()}",
            code="DeploymentNotFound",
        )
    return await _chat(state, request, deployment)


# --------------------------------------------------------------------------- errors


def _error_response(err: HTTPError) -> Any:
    headers = {"www-authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body, status_code=err.status, headers=headers)


# Starlette types every handler as taking Exception; each is registered for the one class it casts to.
async def _http_error(request: Request, exc: Exception) -> Any:
    err = cast(HTTPError, exc)
    err.body = scrub_tree(err.body, _state(request).redactor())  # the last door before the client
    return _error_response(err)


async def _starlette_error(request: Request, exc: Exception) -> Any:
    """Unknown paths and wrong methods answer in the same OpenAI error shape as everything else."""
    exc = cast(StarletteHTTPException, exc)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return _error_response(
        HTTPError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code)
    )


# --------------------------------------------------------------------------- auth


def _state(request: Request) -> ServeState:
    state: ServeState = request.app.state.serve
    return state


def _authorized(request: Request) -> ServeState:
    """The state of a ``/v1`` request carrying ``Authorization: Bearer <key>`` (when a key is set)."""
    state = _state(request)
    header = request.headers.get("authorization") or ""
    scheme, _, token = header.partition(" ")
    _check_key(state, token.strip() if scheme.lower() == "bearer" else None)
    return state


def _check_key(state: ServeState, given: str | None) -> None:
    if state.key is None:
        return
    if not given:
        raise HTTPError(401, "missing API key", code="invalid_api_key")
    if not hmac.compare_digest(given.encode("utf-8"), state.key.encode("utf-8")):
        raise HTTPError(401, "incorrect API key", code="invalid_api_key")


# --------------------------------------------------------------------------- chat completions


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "modelfactory"}


async def _read_body(state: ServeState, request: Request) -> ChatCompletionRequest:
    """The body (:func:`receive_body`), parsed in a worker thread: a 1 MB body is request-sized work,
    never done on the event loop."""
    body = await receive_body(state, request, state.settings.max_body_bytes)
    pool = state.pool_for(len(body))
    return await asyncio.get_running_loop().run_in_executor(pool, parse_request, body)


async def receive_body(state: ServeState, request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 past ``limit`` bytes before it is all read, and with 408 when it has
    not all arrived after ``server.body_timeout_s`` (a slow client holds no slot for ever)."""
    body = bytearray()
    async with body_deadline(state, request):
        async for chunk in body_chunks(request, limit):
            body += chunk
    return bytes(body)


async def body_chunks(
    request: Request, limit: int, too_large: Callable[[int], HTTPError] = body_too_large
) -> AsyncGenerator[bytes, None]:
    """The body as it arrives, ending in ``too_large(limit)`` (413) as soon as more than ``limit`` bytes
    came (or a ``Content-Length`` says they will): a chunked upload is never read whole first."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            over = int(declared) > limit
        except ValueError:
            raise HTTPError(400, "invalid Content-Length header") from None
        if over:
            raise too_large(limit)
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise too_large(limit)
        yield chunk


@contextlib.asynccontextmanager
async def body_deadline(state: ServeState, request: Request) -> AsyncIterator[None]:
    """Reading a body inside: 408 past ``server.body_timeout_s``, 400 when the client went away."""
    try:
        async with asyncio.timeout(state.settings.body_timeout_s):
            yield
    except TimeoutError:
        raise HTTPError(
            408,
            f"the request body took over {state.settings.body_timeout_s:g} s (server.body_timeout_s)",
            code="request_timeout",
        ) from None
    except ClientDisconnect:
        log.info("client %s went away while sending its request", _client(request))
        raise HTTPError(400, "the client disconnected", code="client_disconnected") from None


def _client(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "?"


async def _chat(state: ServeState, request: Request, deployment: str | None) -> Any:
    req = await _read_body(state, request)
    if req.stream:
        messages, stop, params, extra, max_tokens = await _prepared(state, req, deployment)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        deltas = state.dispatcher.stream(messages, stop, params, **extra)
        chunks = StreamChunks(
            f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), state.name, include_usage
        )
        # A local model writes its tool calls as JSON text: parsed here, as its non-streamed reply is.
        parse = getattr(state.model, "parse_tool_calls", None)
        calls = ToolCallStream(parse) if state.is_local and extra["tools_to_call_from"] and parse else None
        return await stream_response(state, deltas, chunks, max_tokens, calls)
    return JSONResponse(await complete(state, req, deployment))


async def complete(
    state: ServeState, req: ChatCompletionRequest, deployment: str | None = None
) -> dict[str, Any]:
    """The ``chat.completion`` body answering ``req`` (not streamed), or the :class:`HTTPError` to send.
    Shared by ``/v1/chat/completions`` and every line of a batch."""
    messages, stop, params, extra, max_tokens = await _prepared(state, req, deployment)
    redact = state.redactor()
    try:
        reply: ChatMessage = await state.dispatcher.complete(messages, stop, params, **extra)
    except Exception as exc:
        raise error_for(exc, state.is_local, redact) from None
    body = completion_body(
        f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), state.name, reply, max_tokens
    )
    if req.logprobs:  # asked of the model with the call (req.params): ChatMessage.logprobs, as the library's
        body["choices"][0]["logprobs"] = logprobs_body(reply.logprobs or [])
    return cast(dict[str, Any], scrub_tree(body, redact))  # an upstream that echoed its key: not to clients


def _text_chars(message: dict[str, Any]) -> int:
    """The characters of a message's text: an image part counts none (its tokens are the processor's to
    count, and its base64 says nothing about them)."""
    content = message.get("content")
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(
            len(str(p.get("text") or "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return len(str(message))


async def _prepared(state: ServeState, req: ChatCompletionRequest, deployment: str | None) -> Any:
    """:func:`_prepare` in a worker thread: what grows with the request (messages, stops, the prompt's
    length) never runs on the event loop, which keeps answering other requests and ``/health``; a large
    request in the bulk thread, so small ones never wait behind it."""
    pool = state.pool_for(req.size)
    return await asyncio.get_running_loop().run_in_executor(pool, _prepare, state, req, deployment)


def _prepare(state: ServeState, req: ChatCompletionRequest, deployment: str | None) -> Any:
    if deployment is None and req.model is not None and not state.serves(req.model):
        raise HTTPError(
            404,
            f"the model '{req.model}' does not exist: this server serves {state.described()}",
            param="model",
            code="model_not_found",
        )
    if req.n is not None and req.n > 1:
        raise HTTPError(400, "n > 1 is not supported: send n requests", param="n", code="unsupported")
    try:
        messages = normalize_messages(req.messages)
        stop = normalize_stop_sequences(req.stop, limit=state.settings.max_stop_sequences)
    except MessageError as exc:
        raise HTTPError(400, str(exc), param="stop" if "stop" in str(exc) else "messages") from None
    params = req.params()
    tools = _tools(state, req, params)
    response_format = req.output_format()
    _check_logprobs(state, req)
    extra = {"response_format": response_format, "tools_to_call_from": tools}
    _check_context(state, messages, tools, params.get("max_tokens"), response_format)
    max_tokens = params.get("max_tokens") or state.default_max
    return messages, stop, params, extra, max_tokens


def _check_logprobs(state: ServeState, req: ChatCompletionRequest) -> None:
    """``logprobs`` are answered (non-streamed, by a local model that scores its replies' tokens: it has
    ``check_logprobs``, and that passes) or refused before any generation, never ignored; ``top_logprobs``
    without ``logprobs: true`` is a 400, as at OpenAI."""
    if req.top_logprobs is not None and not req.logprobs:
        raise HTTPError(400, "top_logprobs needs logprobs: true", param="top_logprobs", code="invalid_value")
    if not req.logprobs:
        return
    check = getattr(state.model, "check_logprobs", None)
    if req.stream or not callable(check):
        what = "streamed replies" if req.stream else f"{type(state.model).__name__}"
        raise HTTPError(
            400,
            f"logprobs on chat completions are not supported for {what} by this server: send them "
            "non-streamed to a served TransformersModel or LlamaCppModel, or the prompt to /v1/completions "
            "with logprobs (local models), or drop logprobs/top_logprobs",
            param="logprobs",
            code="unsupported",
        )
    try:
        check()  # e.g. a LlamaCppModel loaded without logits_all: the load setting to change
    except UnsupportedFeatureError as exc:
        raise HTTPError(400, str(exc), param="logprobs", code="unsupported") from None


def _tools(state: ServeState, req: ChatCompletionRequest, params: dict[str, Any]) -> Any:
    """The tools the model gets, with ``tool_choice`` honoured or refused, never ignored: ``none`` sends
    no tools; ``auto`` (also what an absent one means, as at OpenAI, unless the served model's config
    names one) goes to the model as ``auto``, never as the library's agent default ``required``;
    ``required`` or a named function goes to a model that enforces it (an API backend sends it upstream;
    LlamaCppModel and OpenVINOModel constrain decoding) and is a 400 for one that cannot."""
    if not req.tools:
        return req.tools
    choice = req.tool_choice if req.tool_choice is not None else _configured_tool_choice(state.model)
    if choice == "none":
        return None
    if not (
        choice in ("auto", "required") or (isinstance(choice, dict) and choice.get("type") == "function")
    ):
        raise HTTPError(
            400,
            f"tool_choice must be 'none', 'auto', 'required' or {{'type': 'function', 'function': "
            f"{{'name': ...}}}}, got {choice!r}",
            param="tool_choice",
            code="invalid_value",
        )
    if choice != "auto" and state.is_local and not hasattr(getattr(state.model, "spec", None), "tool_choice"):
        raise HTTPError(
            400,
            f"tool_choice {choice!r} needs decoding constrained to a tool call, which "
            f"{type(state.model).__name__} does not do: serve a LlamaCppModel (it constrains the call "
            "with a grammar) or send tool_choice 'auto'",
            param="tool_choice",
            code="unsupported",
        )
    params["tool_choice"] = choice
    return req.tools


def _configured_tool_choice(model: Any) -> Any:
    """The served model's own ``tool_choice`` (its config's ``tool_choice`` field, as LlamaCppModel's, or
    ``generation_kwargs.tool_choice``), else ``auto``: what a request that names none gets."""
    spec = getattr(model, "spec", None)
    configured = getattr(spec, "tool_choice", None)
    if configured is None:
        configured = (getattr(spec, "generation_kwargs", None) or {}).get("tool_choice")
    return configured if configured is not None else "auto"


MAX_CHARS_PER_TOKEN = 64  # no vocabulary has many longer tokens: more characters than this per token of
# context is over the context for sure, refused before any tokenizing


def _check_context(
    state: ServeState,
    messages: list[dict[str, Any]],
    tools: Any,
    max_tokens: int | None,
    response_format: Any = None,
) -> None:
    """400 ``context_length_exceeded`` (as OpenAI answers) for a prompt the model cannot take, before the
    model tokenizes more than ``context * MAX_CHARS_PER_TOKEN`` characters of it: the messages, the tools
    (templated into the prompt) and a ``response_format`` schema all count, so a megabyte of tool
    definitions is refused by its length, not after minutes of the prep threads templating it."""
    count = getattr(state.model, "count_prompt_tokens", None)
    if not callable(count):
        return
    if state.context_length is None:
        state.context_length = state.settings.max_context_tokens or context_length(state.model, load=True)
    context = state.context_length
    if context is None:
        return
    chars = sum(_text_chars(m) for m in messages)
    chars += sum(len(json.dumps(part, default=str)) for part in (tools, response_format) if part)
    if chars > context * MAX_CHARS_PER_TOKEN:
        raise context_length_exceeded(context, None, max_tokens, "the messages and tools")
    try:
        prompt = int(count(messages, tools))
    except Exception as exc:  # the template refusing these messages: the call would say the same
        raise error_for(exc, state.is_local, state.redactor()) from None
    if prompt + (max_tokens or 1) > context:
        raise context_length_exceeded(context, prompt, max_tokens)
