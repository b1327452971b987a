"""``modelfactory serve`` refuses a body by its declared Content-Length, before reading any of it.

A client that declares a terabyte and sends one byte must get its 413 at once: a server that waited for
the body would hold the connection (and a slot) until ``server.body_timeout_s`` and answer 408. The
server here has a body timeout far beyond the test's hang guard, so only an immediate refusal passes."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from modelfactory import CallableModel  # noqa: E402
from modelfactory.serve import BackgroundServer, ServerSettings  # noqa: E402

pytestmark = pytest.mark.server

LIMIT = 4096  # server.max_body_bytes
HANG_GUARD_S = 30.0  # recv's timeout: only stops a hang; the server's body timeout is 600 s


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    model = CallableModel(fn="examples.custom_model.custom_model")
    settings = ServerSettings(port=0, log_level="warning", max_body_bytes=LIMIT, body_timeout_s=600)
    with BackgroundServer(model, settings) as url:
        yield url


def _answer(url: str, declared: int, sent: bytes) -> bytes:
    """Headers declaring ``declared`` bytes, then ``sent`` and nothing more: the server's whole answer."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=HANG_GUARD_S) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {declared}\r\n\r\n".encode()
            + sent
        )
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data and data.rstrip().endswith(b"}"):
                    break
        except TimeoutError:
            pass  # nothing came back: the assertion below says so
        return data


@pytest.mark.parametrize("declared", [LIMIT + 1, 10**12])
@pytest.mark.parametrize("sent", [b"", b"{"])
def test_a_huge_declared_length_with_a_tiny_body_is_refused_at_once(
    url: str, declared: int, sent: bytes
) -> None:
    answer = _answer(url, declared, sent)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200] or "no answer before the hang guard"
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "body_too_large" and f"over {LIMIT} bytes" in error["message"]
