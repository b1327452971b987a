"""``modelfactory serve`` (issue 22, items 8 and 11): strict request fields, and the Files API's limits (a
chunked upload cut at the limit, the body deadline, deleting and freeing files, a bound on all stored
files). A fast echo model behind a real server on 127.0.0.1; raw sockets where the point is what the
server reads."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from modelfactory import CallableModel  # noqa: E402
from modelfactory.serve import BackgroundServer, ServerSettings  # noqa: E402

pytestmark = pytest.mark.server

ASK = [{"role": "user", "content": "Hi"}]
MB = 1_000_000


def echo() -> CallableModel:
    return CallableModel(fn="examples.custom_model.custom_model")


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    settings = ServerSettings(
        port=0, log_level="warning", max_batch_file_bytes=MB, max_files_bytes=3 * MB, body_timeout_s=60
    )
    srv = BackgroundServer(echo(), settings)
    with srv:
        yield srv


@pytest.fixture(scope="module")
def url(server: BackgroundServer) -> str:
    return server.url


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text[:500]
    error: dict[str, Any] = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


# --------------------------------------------------------------------------- strict request fields


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", True),
        ("temperature", "0.5"),
        ("top_p", "1"),
        ("max_tokens", "8"),
        ("max_tokens", 8.0),
        ("max_tokens", True),
        ("max_completion_tokens", "8"),
        ("stream", "yes"),
        ("stream", 1),
        ("seed", "7"),
        ("n", True),
        ("stream_options", {"include_usage": "yes"}),
        ("model", 7),
    ],
)
def test_request_fields_are_strict_as_openais(url: str, field: str, value: Any) -> None:
    """OpenAI answers ``temperature: true`` or ``max_tokens: "8"`` with a 400 naming the field; before,
    serve coerced them (``stream: "yes"`` streamed)."""
    body = {"messages": ASK, field: value}
    if field == "stream_options":
        body["stream"] = True
    error = error_of(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30), 400)
    assert error["param"] == field and error["code"] == "invalid_value"
    assert field in error["message"]


@pytest.mark.parametrize("body", [{"temperature": 1}, {"top_p": 1}, {"temperature": 0.5, "max_tokens": 8}])
def test_a_whole_number_is_still_a_float(url: str, body: dict[str, Any]) -> None:
    resp = httpx.post(f"{url}/v1/chat/completions", json={"messages": ASK, **body}, timeout=30)
    assert resp.status_code == 200, resp.text


# --------------------------------------------------------------------------- files: size, deadline


BOUNDARY = b"mf-test-boundary"


def _file_part_head() -> bytes:
    return (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )


def _upload_headers(extra: bytes) -> bytes:
    return (
        b"POST /v1/files HTTP/1.1\r\nHost: x\r\ncontent-type: multipart/form-data; boundary="
        + BOUNDARY
        + b"\r\n"
        + extra
        + b"\r\n"
    )


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and data.rstrip().endswith(b"}"):
                break
    except OSError:  # a reset after the answer, or the hang guard
        pass
    return data


def chunked_upload(url: str, total: int, piece: int = 256 * 1024) -> tuple[int, bytes]:
    """A chunked (no Content-Length) multipart upload of ``total`` bytes, sent until the server answers
    or cuts the connection: how many bytes went out, and the answer."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:  # 30 s: a hang guard
        sock.sendall(_upload_headers(b"transfer-encoding: chunked\r\n"))
        sent = 0

        def chunk(data: bytes) -> None:
            sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")

        try:
            chunk(_file_part_head())
            line = b'{"custom_id": "x"}\n'
            block = line * (piece // len(line))
            while sent < total:
                if select.select([sock], [], [], 0)[0]:  # the server answered already
                    break
                chunk(block)
                sent += len(block)
            else:
                chunk(b"\r\n--" + BOUNDARY + b"--\r\n")
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server closed the connection on us: it stopped reading
            pass
        return sent, _read_answer(sock)


def test_a_chunked_upload_past_the_limit_is_cut_short(url: str) -> None:
    """60 MB sent chunked to a server taking 1 MB files: the 413 comes while the upload is still going
    (before, the server read all 60 MB first)."""
    sent, answer = chunked_upload(url, 60 * MB)
    assert sent < 30 * MB, sent  # the limit (1 MB + 1 MB of envelope) plus what the sockets buffer
    assert answer == b"" or answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200


def test_an_upload_over_the_limit_with_a_length_gets_413_json(url: str) -> None:
    data = b'{"custom_id": "x"}\n' * (2 * MB // 19)
    resp = httpx.post(f"{url}/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})
    error = error_of(resp, 413)
    assert "server.max_batch_file_bytes" in error["message"]


def test_a_stalled_upload_gets_408() -> None:
    """Half a multipart body, then nothing: ``server.body_timeout_s`` applies to uploads too (before,
    the server waited for ever)."""
    settings = ServerSettings(port=0, log_level="warning", body_timeout_s=0.5)
    with BackgroundServer(echo(), settings) as url:
        u = urlparse(url)
        with socket.create_connection((u.hostname, u.port), timeout=20) as sock:  # a hang guard
            sock.sendall(_upload_headers(b"content-length: 100000\r\n") + _file_part_head())
            answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"


# --------------------------------------------------------------------------- files: freeing them


def upload(client: httpx.Client, data: bytes) -> httpx.Response:
    return client.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})


def test_delete_frees_a_file(url: str, server: BackgroundServer) -> None:
    """``DELETE /v1/files/{id}`` answers OpenAI's shape and the bytes are gone (before: 405)."""
    store = server.app.state.serve.batches
    with httpx.Client(base_url=url, timeout=30) as client:
        before = store.stored_bytes
        fid = upload(client, b"x" * 1000).json()["id"]
        assert store.stored_bytes == before + 1000
        resp = client.delete(f"/v1/files/{fid}")
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"id": fid, "object": "file", "deleted": True}
        assert store.stored_bytes == before
        error = error_of(client.get(f"/v1/files/{fid}"), 404)
        assert "deleted" in error["message"]
        error_of(client.delete(f"/v1/files/{fid}"), 404)


def test_a_batchs_input_file_is_freed_when_it_ends(url: str, server: BackgroundServer) -> None:
    store = server.app.state.serve.batches
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": ASK}}
    with httpx.Client(base_url=url, timeout=30) as client:
        fid = upload(client, json.dumps(line).encode()).json()["id"]
        body = {"input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        batch = client.post("/v1/batches", json=body).json()
        for _ in range(600):  # a hang guard: a one-line batch of an echo model ends at once
            batch = client.get(f"/v1/batches/{batch['id']}").json()
            if batch["status"] == "completed":
                break
            time.sleep(0.05)
        assert batch["status"] == "completed"
        error = error_of(client.get(f"/v1/files/{fid}"), 404)
        assert f"freed when batch {batch['id']} ended" in error["message"]
        out = client.get(f"/v1/files/{batch['output_file_id']}/content")
        assert out.status_code == 200 and '"custom_id": "a"' in out.text
        assert fid not in store.files
        assert client.delete(f"/v1/files/{batch['output_file_id']}").status_code == 200


def test_all_stored_files_stay_under_max_files_bytes() -> None:
    settings = ServerSettings(port=0, log_level="warning", max_files_bytes=2500)
    with BackgroundServer(echo(), settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        first = upload(client, b"a" * 1500)
        assert first.status_code == 200
        error = error_of(upload(client, b"b" * 1500), 413)
        assert error["code"] == "files_full" and "server.max_files_bytes" in error["message"]
        assert client.delete(f"/v1/files/{first.json()['id']}").status_code == 200
        assert upload(client, b"b" * 1500).status_code == 200
