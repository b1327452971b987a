"""The runner at concurrency 16 vs smolagents' OpenAIServerModel in a 16-thread pool, and in a plain loop.

    .venv/bin/python -m bench.runner_concurrency [items] [concurrency] [delay_s] [--rounds N]  # 200 16 0.2 3

A local OpenAI-compatible server (its own process, a thread per connection, 128-deep listen backlog)
answers every chat completion after ``delay_s``. Every contender is timed the same way: wall time around
the whole batch, measured here, after the same warm-up (one untimed batch of ``concurrency`` items
through that very contender: imports, clients, and as many open connections as it will use).

- ours: ``modelfactory.job.runner.run_items`` with ``OpenAIServerModel`` at ``concurrency``, as a job runs
  it: each row written to ``results.jsonl``, flushed and fsynced before the next (a crash loses only the
  items in flight), progress off;
- smolagents, pool: its model called from a ``concurrency``-thread ``ThreadPoolExecutor``, replies kept
  in a list. This is the fair baseline and the headline: the same concurrency, by hand;
- smolagents, sequential (what a plain ``for`` loop costs): ``for item in items: model(messages)``;
- ours, in memory: ``run_items`` without a results file (``results_path=None``), to show what the
  file costs.

The contenders alternate over ``--rounds`` rounds; medians are printed, with this process's CPU seconds
(user + system; the server runs in its own process), items lost (rows missing from results.jsonl /
replies missing or wrong) and the requests the server saw.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench._common import PY, ROOT, alternate


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("items", nargs="?", type=int, default=200)
    parser.add_argument("concurrency", nargs="?", type=int, default=16)
    parser.add_argument("delay_s", nargs="?", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n, concurrency, delay = args.items, args.concurrency, args.delay_s

    import smolagents
    from smolagents import OpenAIServerModel as SmolOpenAIServerModel

    from modelfactory import OpenAIServerModel
    from modelfactory.job.items import Item
    from modelfactory.job.record import read_results
    from modelfactory.job.runner import run_items

    proc = subprocess.Popen(
        [PY, "-m", "bench.runner_concurrency", "serve", str(delay)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    items = [Item(id=f"item-{i}", messages=[{"role": "user", "content": f"question {i}"}]) for i in range(n)]
    warmup = [
        Item(id=f"warm-{i}", messages=[{"role": "user", "content": f"warm {i}"}]) for i in range(concurrency)
    ]
    expected = {i.id: f"re: {i.messages[0]['content']}" for i in items + warmup}
    # per contender and round: wall seconds, and (items ok, items right, requests the server saw)
    walls: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}  # this process's CPU seconds (the server runs in another)
    counts: dict[str, list[tuple[int, int, int]]] = {}

    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        ours = OpenAIServerModel(model_id="m", api_base=f"{url}/v1")
        theirs = SmolOpenAIServerModel(model_id="m", api_base=f"{url}/v1", api_key="EMPTY")

        def run_ours(batch: list[Item], to_file: bool) -> tuple[float, float, int, int]:
            with tempfile.TemporaryDirectory() as tmp:
                results = Path(tmp) / "results.jsonl" if to_file else None
                start, cpu = time.perf_counter(), time.process_time()
                stats = run_items(ours, batch, concurrency=concurrency, results_path=results, progress=False)
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                rows = read_results(results) if results is not None else {r["id"]: r for r in stats.rows}
            ok = sum(1 for i in batch if i.id in rows and not rows[i.id]["error"])
            right = sum(1 for i in batch if (rows.get(i.id) or {}).get("content") == expected[i.id])
            return wall, cpu, ok, right

        def call_theirs(item: Item) -> str | None:
            try:
                return theirs(item.messages).content
            except Exception:  # a lost item, counted below
                return None

        def run_theirs(batch: list[Item], pool_size: int) -> tuple[float, float, int, int]:
            start, cpu = time.perf_counter(), time.process_time()
            if pool_size > 1:
                with ThreadPoolExecutor(pool_size) as pool:
                    replies = list(pool.map(call_theirs, batch))
            else:
                replies = [call_theirs(item) for item in batch]
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            ok = sum(1 for r in replies if r is not None)
            right = sum(1 for i, r in zip(batch, replies, strict=True) if r == expected[i.id])
            return wall, cpu, ok, right

        runs = {
            "ours": lambda batch: run_ours(batch, True),
            "pool": lambda batch: run_theirs(batch, concurrency),
            "sequential": lambda batch: run_theirs(batch, 1),
            "memory": lambda batch: run_ours(batch, False),
        }
        for run in runs.values():  # the same warm-up for each: one batch of `concurrency` items, untimed
            run(warmup)

        def timed(name: str) -> float:
            before = requests_seen(url)
            wall, cpu, ok, right = runs[name](items)
            walls.setdefault(name, []).append(wall)
            cpus.setdefault(name, []).append(cpu)
            counts.setdefault(name, []).append((ok, right, requests_seen(url) - before))
            return wall

        alternate({name: (lambda name=name: timed(name)) for name in runs}, args.rounds)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    print(
        f"{n} items, server latency {delay * 1000:.0f} ms per request, {args.rounds} alternating rounds; "
        f"smolagents {smolagents.__version__}, openai {version('openai')}, httpx2 {version('httpx2')}; "
        "wall time around each batch, median"
    )
    labels = {
        "ours": f"run_items, concurrency {concurrency}, results.jsonl",
        "pool": f"smolagents model, {concurrency}-thread pool",
        "sequential": "smolagents model, sequential loop",
        "memory": f"run_items, concurrency {concurrency}, in memory",
    }
    med = {name: statistics.median(v) for name, v in walls.items()}
    for name, label in labels.items():
        ok = min(c[0] for c in counts[name])  # the worst round
        right = min(c[1] for c in counts[name])
        requests = sorted({c[2] for c in counts[name]})
        print(
            f"  {label:<44} {med[name]:7.2f} s  {n / med[name]:6.1f} items/s  "
            f"CPU {statistics.median(cpus[name]):5.2f} s  "
            f"ok {ok}/{n}, correct {right}, lost {n - ok}, requests {requests}  "
            f"(rounds: {', '.join(f'{w:.2f}' for w in walls[name])})"
        )
    print(
        f"  fair:    smolagents in a {concurrency}-thread pool / ours: {med['pool'] / med['ours']:.2f}x  (> 1: ours is faster)"
    )
    print(
        f"  naive:   smolagents sequential / ours:     {med['sequential'] / med['ours']:.1f}x  "
        f"(ideal {concurrency}x: {n} items in waves of {concurrency})"
    )
    print(f"  results.jsonl: ours in memory / ours with the file: {med['memory'] / med['ours']:.2f}x")


if __name__ == "__main__":
    main()
