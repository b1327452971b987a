"""``modelfactory serve`` under abuse: how long ``/health`` takes while the server is being abused.

    .venv/bin/python -m bench.serve_abuse [--concurrent 200] [--slow 40] [--slow-headers 40] [--rounds 1]

Three processes, so no figure is the GIL's: the server (the built-in tiny model, batching on), the
abusive clients (:func:`abuse`: 3 x 1 MB prompts, 2 x 123k-stop bodies, 8 x 1 MB tool lists, 2 chunked
60 MB uploads to ``/v1/files`` (1 MB allowed), 12 x 0.9 MB uploads never deleted (8 MB of files allowed),
slow bodies, slow headers (slowloris), and ``--concurrent`` small requests at once), and this one, which
polls ``/health`` every 50 ms from the moment the abuse starts until it ends, and prints the slowest, p99
and median poll, every abusive request's answer (a JSON summary: the statuses each kind got), how many
bytes each chunked upload got out before the server cut it, and the slowest small request.

``tests/test_serve_abuse.py`` runs the same :func:`abuse` in a child process against a server of its own
and checks what it can without a clock: every request answered as documented, every ``/health`` poll
answered; the latency figures are this script's (the README's reliability section quotes them).

``python -m bench.serve_abuse --abuse URL`` runs only the clients (prints their JSON summary);
``python -m bench.serve_abuse --serve`` only the server (prints its URL, serves until killed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
HUGE_PROMPT = "word " * 200_000  # 1 MB: ~200k tokens for a 512-token model
HUGE_STOPS = [f"stop-{i}" for i in range(123_000)]
BODY_TIMEOUT_S = 10.0
HEADER_TIMEOUT_S = 10.0
MAX_BODY_BYTES = 4_000_000
FILE_LIMIT = 1_000_000  # server.max_batch_file_bytes
FILES_LIMIT = 8_000_000  # server.max_files_bytes
MB = 1_000_000
BOUNDARY = b"mf-abuse-boundary"


def huge_tools() -> list[dict[str, Any]]:
    """About 1 MB of tool definitions (1000 tools of 1 KB)."""
    return [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": "d" * 1000,
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
        for i in range(1000)
    ]


def settings_kwargs() -> dict[str, Any]:
    """The server settings the abuse expects (the bench's server and the test's)."""
    return {
        "max_body_bytes": MAX_BODY_BYTES,
        "body_timeout_s": BODY_TIMEOUT_S,
        "header_timeout_s": HEADER_TIMEOUT_S,
        "max_batch_file_bytes": FILE_LIMIT,
        "max_files_bytes": FILES_LIMIT,
    }


def _post(client: Any, url: str, body: bytes) -> int:
    headers = {"content-type": "application/json"}
    return int(client.post(f"{url}/v1/chat/completions", content=body, headers=headers).status_code)


def _timed_post(client: Any, url: str, body: bytes) -> tuple[int, float]:
    t0 = time.perf_counter()
    status = _post(client, url, body)
    return status, time.perf_counter() - t0


def _upload(client: Any, url: str, data: bytes) -> str:
    resp = client.post(f"{url}/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})
    if resp.status_code == 200:
        return "200"
    return f"{resp.status_code} {resp.json()['error'].get('code')}"


def chunked_upload(url: str, total: int, piece: int = 256 * 1024) -> tuple[str, int]:
    """A chunked (no Content-Length) multipart upload of ``total`` bytes, sent until the server answers
    or cuts the connection: the answer's status (``closed``: cut without one) and the bytes sent."""
    u = urlparse(url)
    head = (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    with socket.create_connection((u.hostname, u.port), timeout=120) as sock:
        sock.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\n"
            b"content-type: multipart/form-data; boundary=" + BOUNDARY + b"\r\n\r\n"
        )
        sent = 0
        line = b'{"custom_id": "x"}\n'
        block = line * (piece // len(line))
        try:
            sock.sendall(b"%x\r\n" % len(head) + head + b"\r\n")
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
                sent += len(block)
            if sent >= total:
                tail = b"\r\n--" + BOUNDARY + b"--\r\n"
                sock.sendall(b"%x\r\n" % len(tail) + tail + b"\r\n0\r\n\r\n")
        except OSError:
            pass
        answer = _answer(sock)
    return (answer[9:12].decode("latin-1") if answer.startswith(b"HTTP/1.1 ") else "closed"), sent


def slow_body(url: str, hold_s: float) -> bytes:
    """Headers and one byte of a 100-byte body, then nothing: what the server answers, if anything."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=hold_s) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 100\r\n\r\n{"
        )
        return _answer(sock)


def slow_headers(url: str, hold_s: float) -> bytes:
    """Slowloris: the request line and half a header, one more byte every second, never the blank line."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=hold_s) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        deadline = time.monotonic() + hold_s
        sock.settimeout(1.0)
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                try:
                    sock.sendall(b"a")
                except OSError:
                    return b""
                continue
            except OSError:
                return b""
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            return data + _answer(sock) if data else b""
        return b""


def _answer(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and data.rstrip().endswith(b"}"):
                break
    except (TimeoutError, OSError):
        pass
    return data


def abuse(url: str, concurrent: int = 200, slow: int = 40, slow_header_clients: int = 40) -> dict[str, Any]:
    """Every kind of abuse at once; the answer each request got (status, or the first bytes of a raw
    answer), by kind. The clients are cheap (one connection pool, bodies encoded once), so on a small
    machine the figures are the server's, not the abusers' own CPU use."""
    import httpx

    def body(messages: list[dict[str, str]], **extra: Any) -> bytes:
        return json.dumps({"messages": messages, **extra}).encode()

    huge_body = body([{"role": "user", "content": HUGE_PROMPT}])
    stops_body = body([{"role": "user", "content": "Hi"}], stop=HUGE_STOPS)
    tools_body = body([{"role": "user", "content": "Hi"}], tools=huge_tools())
    flood = b'{"custom_id": "x"}\n' * (900_000 // 19)
    unlimited = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    with (
        httpx.Client(timeout=300, limits=unlimited) as client,
        ThreadPoolExecutor(concurrent + slow + slow_header_clients + 32) as pool,
    ):
        huge = [pool.submit(_post, client, url, huge_body) for _ in range(3)]
        stops = [pool.submit(_post, client, url, stops_body) for _ in range(2)]
        tools = [pool.submit(_post, client, url, tools_body) for _ in range(8)]
        uploads = [pool.submit(chunked_upload, url, 60 * MB) for _ in range(2)]
        files = [pool.submit(_upload, client, url, flood) for _ in range(12)]
        slow_bodies = [pool.submit(slow_body, url, BODY_TIMEOUT_S * 4) for _ in range(slow)]
        slowloris = [pool.submit(slow_headers, url, HEADER_TIMEOUT_S * 4) for _ in range(slow_header_clients)]
        small = [
            pool.submit(
                _timed_post, client, url, body([{"role": "user", "content": f"Hi {i}"}], max_tokens=2)
            )
            for i in range(concurrent)
        ]
        return {
            "huge prompt": [f.result() for f in huge],
            "huge stops": [f.result() for f in stops],
            "huge tools": [f.result() for f in tools],
            "chunked 60 MB upload": [f.result()[0] for f in uploads],
            "chunked upload MB sent": [round(f.result()[1] / MB, 1) for f in uploads],
            "0.9 MB uploads, never deleted": sorted(f.result() for f in files),
            "slow body": [f.result()[:12].decode("latin-1") for f in slow_bodies],
            "slow headers": [f.result()[:12].decode("latin-1") for f in slowloris],
            "concurrent": [f.result()[0] for f in small],
            "slowest small request s": round(max((f.result()[1] for f in small), default=0.0), 2),
        }


def serve() -> None:
    """The tiny model behind ``modelfactory serve``'s app, on a free port; prints the URL, serves on."""
    from modelfactory.backends.transformers import TransformersModel
    from modelfactory.serve import ServerSettings
    from modelfactory.serve.server import run_server

    model = TransformersModel(model_id="builtin:tiny-llama", dtype="float32", max_new_tokens=8).load()
    settings = ServerSettings(port=0, log_level="warning", **settings_kwargs())
    run_server(model, settings, on_ready=lambda url: print(url, flush=True))


def poll_health(url: str, stop: threading.Event, out: list[float], failures: list[str]) -> None:
    import httpx

    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                if client.get(f"{url}/health").status_code != 200:
                    failures.append("status")
            except Exception as exc:  # a timeout: no answer in 30 s
                failures.append(repr(exc))
            out.append(time.perf_counter() - t0)
            time.sleep(0.05)


def _abusers(url: str, args: argparse.Namespace) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "bench.serve_abuse", "--abuse", url, "--concurrent", str(args.concurrent)]
    cmd += ["--slow", str(args.slow), "--slow-headers", str(args.slow_headers)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def _cpu() -> str:
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split()) & {"avx2", "avx512f", "avx512_bf16"}
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} CPUs, flags: {' '.join(sorted(flags)) or 'none of avx2/avx512'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--abuse", metavar="URL", help="run only the abusive clients against URL")
    parser.add_argument("--serve", action="store_true", help="run only the server")
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--slow", type=int, default=40)
    parser.add_argument("--slow-headers", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if args.abuse:
        print(json.dumps(abuse(args.abuse, args.concurrent, args.slow, args.slow_headers)))
        return
    if args.serve:
        serve()
        return
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.serve_abuse", "--serve"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        print(f"server {url} (tiny model, pid {server.pid}); {_cpu()}; load average {os.getloadavg()[0]:.2f}")
        for r in range(args.rounds):
            latencies: list[float] = []
            failures: list[str] = []
            stop = threading.Event()
            poller = threading.Thread(target=poll_health, args=(url, stop, latencies, failures))
            start = time.perf_counter()
            clients = _abusers(url, args)
            poller.start()
            out, _ = clients.communicate()
            stop.set()
            poller.join()
            took = time.perf_counter() - start
            answers = json.loads(out)
            sent = answers.pop("chunked upload MB sent")
            slowest = answers.pop("slowest small request s")
            summary = {kind: dict(sorted(_count(v).items())) for kind, v in answers.items()}
            lat = sorted(latencies)
            p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
            print(
                f"round {r + 1}: abuse took {took:.1f} s; /health {len(lat)} polls, slowest {lat[-1]:.3f} s, "
                f"p99 {p99:.3f} s, median {statistics.median(lat):.3f} s, over 1 s: "
                f"{sum(1 for x in lat if x > 1.0)}, unanswered: {len(failures)}"
            )
            print(f"  answers: {json.dumps(summary)}")
            print(f"  chunked 60 MB uploads cut after {sent} MB; slowest small request {slowest} s")
    finally:
        server.terminate()
        server.wait(timeout=30)


def _count(values: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


if __name__ == "__main__":
    main()
