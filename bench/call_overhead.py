"""Per-call overhead: OpenAIServerModel vs the raw openai client on the same warm server (issue 7, target 2).

    .venv/bin/python -m bench.call_overhead [calls] [rounds]

Both make `calls` sequential calls per round on one warm client; rounds alternate; prints the median
per-call time and the ratio.
"""

from __future__ import annotations

import sys
import time

import openai

from bench._common import alternate, local_server, report
from modelfactory import OpenAIServerModel

MESSAGES = [{"role": "user", "content": "hi"}]


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with local_server() as url:
        raw = openai.OpenAI(base_url=f"{url}/v1", api_key="EMPTY", max_retries=0)
        ours = OpenAIServerModel(model_id="m", api_base=f"{url}/v1", max_retries=0)

        def run_raw() -> float:
            start = time.perf_counter()
            for _ in range(calls):
                _ = raw.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
            return (time.perf_counter() - start) / calls * 1e3

        def run_ours() -> float:
            start = time.perf_counter()
            for _ in range(calls):
                _ = ours(MESSAGES).content
            return (time.perf_counter() - start) / calls * 1e3

        run_raw(), run_ours()  # warm both clients and connections
        samples = alternate({"modelfactory": run_ours, "raw openai": run_raw}, rounds)
    print(f"{calls} calls per round, {rounds} rounds")
    report(samples, "modelfactory", unit="ms/call")


if __name__ == "__main__":
    main()
