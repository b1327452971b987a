"""The socket and uvicorn layer: bind (port 0: any free one), run until stopped, in this thread or in a
background one (:class:`BackgroundServer`, for notebooks and tests)."""

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..secrets import scrubbed_logs
from .app import create_app, import_deps
from .dispatch import Dispatcher
from .settings import API_KEY_ENV, ServerSettings, served_names

__all__ = ["BackgroundServer", "header_timeout_protocol", "open_without_key", "run_server", "serve_forever"]

_log = logging.getLogger("modelfactory.serve")


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


def _uvicorn_server(app: Any, settings: ServerSettings) -> Any:
    import_deps()
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
        access_log=True,
        http=header_timeout_protocol(settings.header_timeout_s),
    )
    return uvicorn.Server(config)


_TIMEOUT_BODY = json.dumps(
    {
        "error": {
            "message": "the request headers did not all arrive in time (server.header_timeout_s)",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_timeout",
        }
    }
).encode()
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_TIMEOUT_BODY)}\r\n\r\n".encode()
    + _TIMEOUT_BODY
)


def header_timeout_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools or h11, as uvicorn picks) with a deadline on request *headers*.

    uvicorn times a keep-alive connection out only between two requests, and the app's body timeout starts
    once the headers are in: a client that connects and sends nothing, or sends its headers one byte at a
    time (slowloris), would hold a connection for ever. Here every wait for headers (after connecting, or
    once the next request's first bytes came) has ``timeout_s`` to end; then the client gets a 408 and the
    connection is closed. The timer is the event loop's: nothing runs per byte."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
        header_timeout_s = timeout_s
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._watch_headers()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # idle until the next request: uvicorn's keep-alive timeout
            self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _awaiting_headers(self) -> bool:
            cycle = getattr(self, "cycle", None)
            return cycle is None or bool(getattr(cycle, "response_complete", False))

        def _watch_headers(self) -> None:
            """Armed while a request's headers are awaited (not between requests once a response is
            complete and nothing more came: uvicorn's keep-alive timer covers that), disarmed otherwise."""
            transport = getattr(self, "transport", None)
            if transport is None or transport.is_closing() or not self._awaiting_headers():
                self._disarm()
            elif self._header_timer is None and not getattr(self, "timeout_keep_alive_task", None):
                self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_timed_out)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_timed_out(self) -> None:
            self._header_timer = None
            transport = self.transport
            if transport.is_closing() or not self._awaiting_headers():
                return
            client = getattr(self, "client", None)
            where = f"{client[0]}:{client[1]}" if client else "?"
            _log.info(
                "client %s sent no complete request headers within %g s (server.header_timeout_s): closed",
                where,
                self.header_timeout_s,
            )
            transport.write(_TIMEOUT_RESPONSE)
            transport.close()

    return HeaderTimeoutProtocol


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
        with scrubbed_logs(app.state.serve.redactor()):  # the upstream's key never reaches a log line
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
        self._logs = contextlib.ExitStack()

    @property
    def dispatcher(self) -> Dispatcher:
        return self.app.state.dispatcher  # type: ignore[no-any-return]

    def start(self) -> "BackgroundServer":
        self._logs.enter_context(scrubbed_logs(self.app.state.serve.redactor()))
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
        self._logs.close()

    def __enter__(self) -> str:
        self.start()
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def open_without_key(settings: ServerSettings) -> str | None:
    """Why these settings are refused (a non-loopback host, no key, no explicit opt-in), or None."""
    if settings.key() is not None or _is_loopback(settings.host) or settings.allow_unauthenticated:
        return None
    return (
        f"server.host={settings.host} without an API key: anyone who can reach it could use the model. "
        f"Set {API_KEY_ENV}, or pass server.allow_unauthenticated=true to serve it open"
    )


def serve_forever(model: Any, settings: ServerSettings) -> int:
    """What ``modelfactory serve`` does with a built model: warn when open to all, announce, serve until
    interrupted; the exit status (1: the address cannot be bound; 2: open to all without a key)."""
    name, *aliases = served_names(model, settings)
    refused = open_without_key(settings)
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    if settings.key() is None and not _is_loopback(settings.host):
        print(
            f"warning: serving on {settings.host} without an API key (server.allow_unauthenticated=true): "
            "anyone who can reach it can use the model",
            file=sys.stderr,
        )

    def ready(url: str) -> None:
        auth = "API key required" if settings.key() else "no API key"
        if aliases:
            auth += "; also answers to " + ", ".join(f"'{a}'" for a in aliases)
        print(f"modelfactory serve: '{name}' ({type(model).__name__}) on {url}/v1 ({auth})", flush=True)

    try:
        run_server(model, settings, on_ready=ready)
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    return 0
