"""The runner at concurrency 16 vs a sequential loop over smolagents' OpenAIServerModel (issue 4).

    .venv/bin/python -m bench.runner_concurrency [items] [concurrency] [delay_s]     # 200 16 0.2

A local OpenAI-compatible server (its own process, a thread per connection, 128-deep listen backlog)
answers every chat completion after ``delay_s``. Both contenders are warmed up first (imports, the
first connection). Ours: ``modelfactory.runner.run_items`` with ``OpenAIServerModel`` writing
``results.jsonl`` (flushed and fsynced per row). Theirs: ``for item in items: model(messages)``.
Prints wall times, the ratio, and items lost (rows missing from results.jsonl / replies missing, and
requests the server saw).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench._common import PY, ROOT


def completion(content: str) -> dict[str, Any]:
    """The server's reply (tests/test_fakes_match_providers.py checks it against the openai SDK's types)."""
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12},
    }


def serve(delay: float) -> None:
    """Run the delayed server until killed; print its URL first."""
    count = {"n": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(json.dumps(count).encode())

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            with lock:
                count["n"] += 1
            time.sleep(delay)
            last = json.loads(raw)["messages"][-1]["content"]
            self._send(json.dumps(completion(f"re: {last}")).encode())

    class Server(ThreadingHTTPServer):
        request_queue_size = 128
        daemon_threads = True

    httpd = Server(("127.0.0.1", 0), Handler)
    print(f"http://127.0.0.1:{httpd.server_address[1]}", flush=True)
    httpd.serve_forever()


def requests_seen(url: str) -> int:
    with urllib.request.urlopen(url + "/count") as r:  # noqa: S310 (127.0.0.1 only)
        return int(json.loads(r.read())["n"])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(float(sys.argv[2]))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.2

    from smolagents import OpenAIServerModel as SmolOpenAIServerModel

    from modelfactory import OpenAIServerModel
    from modelfactory.runner import Item, read_results, run_items

    proc = subprocess.Popen(
        [PY, "-m", "bench.runner_concurrency", "serve", str(delay)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        items = [
            Item(id=f"item-{i}", messages=[{"role": "user", "content": f"question {i}"}]) for i in range(n)
        ]
        ours = OpenAIServerModel(model_id="m", api_base=f"{url}/v1")
        theirs = SmolOpenAIServerModel(model_id="m", api_base=f"{url}/v1", api_key="EMPTY")
        warm = [{"role": "user", "content": "warm up"}]
        ours(warm), theirs(warm)  # imports, clients, first connection: outside both timings

        with tempfile.TemporaryDirectory() as tmp:
            results = Path(tmp) / "results.jsonl"
            before = requests_seen(url)
            stats = run_items(ours, items, concurrency=concurrency, results_path=results, progress=False)
            ours_requests = requests_seen(url) - before
            rows = read_results(results)
            ours_ok = sum(1 for i in items if i.id in rows and not rows[i.id]["error"])
            ours_right = sum(
                1 for i in items if (rows.get(i.id) or {}).get("content") == f"re: {i.messages[0]['content']}"
            )

        before = requests_seen(url)
        start = time.perf_counter()
        replies = []
        for item in items:
            replies.append(theirs(item.messages).content)
        theirs_s = time.perf_counter() - start
        theirs_requests = requests_seen(url) - before
        theirs_ok = sum(
            1 for item, r in zip(items, replies, strict=True) if r == f"re: {item.messages[0]['content']}"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    print(f"{n} items, server latency {delay * 1000:.0f} ms per request")
    print(
        f"  modelfactory run_items (concurrency {concurrency}): {stats.elapsed_s:7.2f} s  "
        f"{n / stats.elapsed_s:6.1f} items/s  ok {ours_ok}/{n}, correct {ours_right}, "
        f"lost {n - ours_ok}, requests {ours_requests}, p95 latency {stats.p95_latency_s:.3f} s"
    )
    print(
        f"  smolagents OpenAIServerModel, sequential:   {theirs_s:7.2f} s  "
        f"{n / theirs_s:6.1f} items/s  ok {theirs_ok}/{n}, lost {n - theirs_ok}, requests {theirs_requests}"
    )
    print(f"  ratio (sequential / runner): {theirs_s / stats.elapsed_s:.1f}x   (ideal {concurrency}x)")


if __name__ == "__main__":
    main()
