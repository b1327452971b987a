"""runner.provider_batch vs online against one fake provider (issue 13): wall time, requests sent and cost.

    .venv/bin/python -m bench.batch_vs_online [items] [latency_s] [rpm]          # 1000 0.2 60

The fake provider is ``modelfactory serve`` in this process, serving a model that answers after
``latency_s``: online, ``/v1/chat/completions`` allows ``rpm`` requests a minute (over it: 429 with the
wait in the message, as providers do) and the client keeps to it with ``model.requests_per_minute``;
the Batches API (``/v1/files``, ``/v1/batches``) takes the whole job as one file and runs it with the
server's own concurrency, as providers' batch quotas allow. Every HTTP request the server gets is
counted by path. A real provider's batch takes minutes to hours; what this measures is the client
side: requests sent, and how long the job holds its caller, with the same rows either way.

Cost: each prompt is 100 words and the fake counts tokens as words (its replies carry that usage);
the client is priced at gpt-4o's list price ($2.50 / $10 per million input / output tokens, batch at
half: ``model.price``), and the figure is the sum of the rows' ``cost_usd`` as ``modelfactory.pricing``
puts it on them (``"batch": true`` rows at the batch rate).
"""

from __future__ import annotations

import collections
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from modelfactory import CallableModel, OpenAIServerModel
from modelfactory.batch import BatchOptions
from modelfactory.errors import BackendError
from modelfactory.job.runner import run_items
from modelfactory.messages import ChatMessage, TokenUsage
from modelfactory.serve import BackgroundServer, ServerSettings

# gpt-4o's list price, USD per million tokens (the batch discount: half, OpenAI's batch price)
PRICE = {"input": 2.5, "output": 10.0, "batch_discount": 0.5}


def fake_provider(latency: float, rpm: float) -> tuple[CallableModel, dict[str, Any]]:
    lock = threading.Lock()
    window: collections.deque[float] = collections.deque()
    state: dict[str, Any] = {"limited": True, "429": 0}

    def answer(messages: list[dict[str, Any]], **kw: Any) -> ChatMessage:
        if state["limited"]:
            with lock:
                now = time.monotonic()
                while window and now - window[0] > 60:
                    window.popleft()
                if len(window) >= rpm:
                    state["429"] += 1
                    raise BackendError("rate limit: 60 requests per minute", status=429, retryable=False)
                window.append(now)
        time.sleep(latency)
        prompt = str(messages[-1]["content"])
        text = "answer to " + prompt.split(":")[0]
        return ChatMessage(content=text, token_usage=TokenUsage(len(prompt.split()), len(text.split())))

    return CallableModel(fn=answer, model_id="fake", retry={"max_attempts": 1}), state


def counted(srv: BackgroundServer) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()

    @srv.app.middleware("http")
    async def count(request: Any, call_next: Any) -> Any:
        path = request.url.path
        seen[
            "/v1/batches/{id}"
            if path.startswith("/v1/batches/")
            else "/v1/files/{id}/content"
            if path.endswith("/content")
            else path
        ] += 1
        return await call_next(request)

    return seen


def run(mode: str, n: int, latency: float, rpm: float) -> dict[str, Any]:
    model, state = fake_provider(latency, rpm)
    state["limited"] = mode == "online"  # the batch endpoint has its own, far higher, quota
    settings = ServerSettings(port=0, log_level="warning", max_concurrency=16)
    srv = BackgroundServer(model, settings)
    seen = counted(srv)
    srv.start()
    try:
        client = OpenAIServerModel(
            model_id="fake", api_base=f"{srv.url}/v1", requests_per_minute=rpm, price=PRICE
        )
        items = [{"id": f"i{i}", "prompt": f"question {i}: " + " ".join(["word"] * 98)} for i in range(n)]
        out = Path(tempfile.mkdtemp()) / "results.jsonl"
        start = time.perf_counter()
        stats = run_items(
            client,
            items,
            results_path=out,
            concurrency=16,
            provider_batch=BatchOptions(poll_s=1.0) if mode == "batch" else None,
            progress=False,
        )
        wall = time.perf_counter() - start
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    finally:
        srv.stop()
    return {
        "mode": mode,
        "wall_s": wall,
        "ok": stats.ok,
        "failed": stats.failed,
        "requests": sum(seen.values()),
        "by_path": dict(seen),
        "429s": state["429"],
        "cost_usd": stats.cost_usd,
        "contents": sorted((r["id"], r["content"]) for r in rows),
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    latency = float(sys.argv[2]) if len(sys.argv) > 2 else 0.2
    rpm = float(sys.argv[3]) if len(sys.argv) > 3 else 60
    print(f"{n} items, {latency * 1000:.0f} ms per request, online limit {rpm:.0f} rpm")
    results = [run("batch", n, latency, rpm), run("online", n, latency, rpm)]
    print(
        f"{'mode':8} {'wall s':>8} {'ok':>6} {'failed':>6} {'requests':>9} {'429s':>5} {'cost $':>9}"
        "  requests by path"
    )
    for r in results:
        print(
            f"{r['mode']:8} {r['wall_s']:8.1f} {r['ok']:6d} {r['failed']:6d} {r['requests']:9d} "
            f"{r['429s']:5d} {r['cost_usd']:9.5f}  {r['by_path']}"
        )
    b, o = results
    print(
        f"online/batch: wall x{o['wall_s'] / b['wall_s']:.1f}, requests x{o['requests'] / b['requests']:.1f}, "
        f"cost x{o['cost_usd'] / b['cost_usd']:.2f}; same replies: {b['contents'] == o['contents']}"
    )


if __name__ == "__main__":
    main()
