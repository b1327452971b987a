"""Load: N requests at concurrency C through the runner to a local server failing 1% of requests.

    .venv/bin/python -m bench.load [--requests 5000] [--concurrency 64] [--fail-rate 0.01]
                                   [--max-attempts 1] [--no-runner]

The recording server runs in its own process (``--fail-rate``: that share of requests get a 500;
``--echo``: each reply repeats its prompt, so a reply that reached the wrong item would show). Every item
must end with exactly one result row, a reply (whose text is its own prompt) or an error: the report
counts rows ok / failed / lost / duplicated / mismatched, the requests the server saw (= attempts: with
``--max-attempts 1`` exactly one per item, so no SDK retries hide underneath), the failures it injected,
throughput, and this process's RSS (before, peak, after). Exit status 1 if any check fails.

``tests/test_load.py`` runs a 500-request version (marked slow) with the same function.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def failing_server(fail_rate: float) -> Iterator[str]:
    """modelfactory.testing's fake OpenAI server in another process (not sharing our GIL or our RSS)."""
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    cmd = [sys.executable, "-m", "modelfactory.testing", "--fail-rate", str(fail_rate), "--echo"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def server_stats(url: str) -> dict[str, int]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url}/_stats", timeout=10) as resp:
        return dict(json.loads(resp.read()))


def rss_mb() -> float:
    """Current resident set size of this process, in MiB (Linux /proc; else the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class RssSampler:
    """Samples RSS every ``interval`` seconds in a thread: the peak *during* the run, not since start."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def _through_runner(model: Any, items: list[Any], concurrency: int, results: Path) -> None:
    """Rows go to ``results`` as they finish (none are kept in memory)."""
    from modelfactory.job.runner import run_items

    run_items(model, items, concurrency=concurrency, results_path=results, progress=False, fsync=False)


def _through_threads(model: Any, items: list[Any], concurrency: int, results: Path) -> None:
    """The fallback without modelfactory.job.runner: a thread pool, one row per item written to ``results``."""

    def one(item: Any) -> dict[str, Any]:
        try:
            reply = model(item.messages)
        except Exception as exc:
            error = {"type": type(exc).__name__, "message": str(exc), "status": getattr(exc, "status", None)}
            return {"id": item.id, "content": None, "error": error}
        return {"id": item.id, "content": reply.content, "error": None}

    with ThreadPoolExecutor(max_workers=concurrency) as pool, results.open("w", encoding="utf-8") as f:
        for row in pool.map(one, items):
            f.write(json.dumps(row) + "\n")


def run_load(
    url: str,
    *,
    requests: int = 5000,
    concurrency: int = 64,
    max_attempts: int = 1,
    use_runner: bool = True,
    stats: Callable[[], dict[str, int]] | None = None,
) -> dict[str, Any]:
    """Drive the load against the server at ``url``; return the report (see the module docstring)."""
    from modelfactory import OpenAIServerModel
    from modelfactory.errors import BackendError

    try:
        from modelfactory.job.items import Item
    except ImportError:  # the runner is optional here
        from types import SimpleNamespace as Item  # type: ignore[assignment]

        use_runner = False

    model = OpenAIServerModel(
        model_id="load",
        api_base=f"{url}/v1",
        timeout=60,
        retry={"max_attempts": max_attempts, "initial_wait": 0.01, "max_wait": 0.1},
    )
    with contextlib.suppress(BackendError):  # warm up (SDK, client, a connection); may hit a failure
        model([{"role": "user", "content": "warm-up"}])
    stats = stats or (lambda: server_stats(url))
    before = stats()
    ids = [f"item-{i:05d}" for i in range(requests)]
    items = [Item(id=i, messages=[{"role": "user", "content": i}]) for i in ids]
    rss_before = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        with RssSampler() as sampler:
            start = time.perf_counter()
            (_through_runner if use_runner else _through_threads)(model, items, concurrency, results)
            elapsed = time.perf_counter() - start
        rss_after = rss_mb()
        with results.open(encoding="utf-8") as f:  # every line, not the newest per id: duplicates show
            rows = [json.loads(line) for line in f if line.strip()]
    after = stats()
    counts = Counter(str(r.get("id")) for r in rows)
    ok_rows = [r for r in rows if not r.get("error")]
    report = {
        "requests": requests,
        "concurrency": concurrency,
        "max_attempts": max_attempts,
        "through": "modelfactory.job.runner.run_items" if use_runner else "ThreadPoolExecutor",
        "rows": len(rows),
        "ok": len(ok_rows),
        "failed": len(rows) - len(ok_rows),
        "lost": sum(1 for i in ids if counts[i] == 0),
        "duplicated": sum(1 for i in ids if counts[i] > 1),
        "unexpected_ids": sum(1 for i in counts if i not in set(ids)),
        "mismatched": sum(1 for r in ok_rows if r.get("content") != r.get("id")),
        "http_errors": sum(1 for r in rows if r.get("error") and r["error"].get("status")),
        "transport_errors": sum(1 for r in rows if r.get("error") and not r["error"].get("status")),
        "server_requests": after["requests"] - before["requests"],
        "injected_failures": after["injected_failures"] - before["injected_failures"],
        "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(requests / elapsed, 1),
        "rss_before_mib": round(rss_before, 1),
        "rss_peak_during_run_mib": round(sampler.peak, 1),
        "rss_after_mib": round(rss_after, 1),
        "peak_rss_process_mib": round(peak_rss_mb(), 1),
    }
    problems = []
    if report["lost"] or report["duplicated"] or report["unexpected_ids"] or report["mismatched"]:
        problems.append("rows lost, duplicated, unexpected or mismatched")
    if report["rows"] != requests:
        problems.append(f"{report['rows']} rows for {requests} items")
    if max_attempts == 1 and report["server_requests"] > requests:
        problems.append(f"{report['server_requests']} requests for {requests} items: hidden retries")
    if max_attempts == 1 and report["http_errors"] != report["injected_failures"]:
        problems.append(f"{report['http_errors']} HTTP error rows for {report['injected_failures']} injected")
    report["problems"] = problems
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--fail-rate", type=float, default=0.01)
    parser.add_argument("--max-attempts", type=int, default=1, help="1: failures become error rows")
    parser.add_argument("--no-runner", action="store_true", help="a plain thread pool instead of the runner")
    args = parser.parse_args()
    with failing_server(args.fail_rate) as url:
        report = run_load(
            url,
            requests=args.requests,
            concurrency=args.concurrency,
            max_attempts=args.max_attempts,
            use_runner=not args.no_runner,
        )
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:>{width}}: {value}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
