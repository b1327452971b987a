"""The FastAPI app serving one model (the package docstring, ``modelfactory.serve``, describes the routes)."""

import contextlib
import hmac
import ipaddress
import logging
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ..errors import (
    ConfigError,
    MessageError,
    MissingDependencyError,
    ModelFactoryError,
)
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
from .settings import API_KEY_ENV, ServerSettings, served_name

__all__ = ["BackgroundServer", "create_app", "main", "run_server"]

log = logging.getLogger("modelfactory.serve")


# --------------------------------------------------------------------------- the app


def create_app(model: Any, settings: ServerSettings | None = None) -> Any:
    """A FastAPI app serving ``model`` (needs ``modelfactory[serve]``)."""
    _import_deps()
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


# --------------------------------------------------------------------------- running it


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket (``port`` 0: any free one): clients that connect before uvicorn runs just wait."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _import_deps() -> None:
    for package in ("fastapi", "uvicorn"):
        try:
            __import__(package)
        except ImportError:
            raise MissingDependencyError(package, "serve", "modelfactory serve") from None


def _uvicorn_server(app: Any, settings: ServerSettings) -> Any:
    _import_deps()
    import uvicorn

    config = uvicorn.Config(app, log_level=settings.log_level, timeout_graceful_shutdown=5, access_log=True)
    return uvicorn.Server(config)


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(
    model: Any, settings: ServerSettings, *, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve ``model`` until interrupted (Ctrl-C / SIGTERM)."""
    app = create_app(model, settings)
    sock = _bind(settings.host, settings.port)
    server = _uvicorn_server(app, settings)
    url = _url(sock)
    if on_ready is not None:
        on_ready(url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class BackgroundServer:
    """``modelfactory serve`` in a thread of this process (notebooks, tests)::

    with BackgroundServer(model, ServerSettings(port=0)) as url:
        OpenAIServerModel(model_id="tiny-llama", api_base=f"{url}/v1")(messages)
    """

    def __init__(self, model: Any, settings: ServerSettings | None = None) -> None:
        self.settings = settings or ServerSettings(port=0, log_level="warning")
        self.app = create_app(model, self.settings)
        self._sock = _bind(self.settings.host, self.settings.port)
        self.url = _url(self._sock)
        self._server = _uvicorn_server(self.app, self.settings)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="modelfactory-serve", daemon=True
        )

    @property
    def dispatcher(self) -> Dispatcher:
        return self.app.state.dispatcher  # type: ignore[no-any-return]

    def start(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> str:
        self.start()
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(config_dir: Path, overrides: list[str]) -> int:
    """``modelfactory serve [overrides]``: compose like run.py, build the model, load it, serve it."""
    from hydra.errors import HydraException

    from ..cli import compose
    from ..factory import build_model

    try:
        cfg = compose(config_dir, overrides)
    except HydraException as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    try:
        settings = ServerSettings.from_config(cfg.get("server"))
        model = build_model(cfg.model)
        load = getattr(model, "load", None)
        if callable(load):  # weights now, not on the first request
            load()
        _import_deps()
    except ModelFactoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    name = served_name(model, settings)
    if settings.key() is None and not _is_loopback(settings.host):
        print(
            f"warning: serving on {settings.host} without an API key: anyone who can reach it can use the "
            f"model; set {API_KEY_ENV}",
            file=sys.stderr,
        )

    def ready(url: str) -> None:
        auth = "API key required" if settings.key() else "no API key"
        print(f"modelfactory serve: '{name}' ({type(model).__name__}) on {url}/v1 ({auth})", flush=True)

    try:
        run_server(model, settings, on_ready=ready)
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    return 0
