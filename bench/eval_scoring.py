"""Scoring overhead (issue 25): the string scorers per item, and the code scorer's samples per second.

    .venv/bin/python -m bench.eval_scoring [workers] [rounds]

- text: every string scorer (exact, includes, pattern, numeric, choice, json) on 50 capitals-style
  replies, median microseconds per item and scorer over ``rounds``; compare with a local model call
  (SmolLM2-135M through llama.cpp: ~1-2 s for 64 tokens), the issue's goal being under 1% of it.
- code: all 164 HumanEval canonical solutions plus 36 broken ones through the sandboxed code scorer
  with ``workers`` threads, each driving one sandbox worker that forks a child per sample (default 2, the
  machine's cores); samples/s per round (goal: >= 20 samples/s on two cores), and the CPU the workers and
  their children used per sample (each round starts fresh workers: their start-up is counted).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

from modelfactory.eval import sandbox
from modelfactory.eval.scoring import build_scorer, score_many
from modelfactory.eval.tasks import humaneval_items, item_view

TEXT_SCORERS = [
    "exact",
    "includes",
    {"name": "pattern", "pattern": r"capital is (\w+)"},
    "numeric",
    "choice",
    "json",
]


def text_overhead(rounds: int) -> dict[str, float]:
    pairs = [
        (f"I believe the capital is City{i}. Answer: B, 42", {"id": str(i), "target": f"City{i}"})
        for i in range(50)
    ]
    out = {}
    for spec in TEXT_SCORERS:
        scorer = build_scorer(spec)
        per_item = []
        for _ in range(rounds):
            start = time.perf_counter()
            for reply, item in pairs:
                scorer(reply, item)
            per_item.append((time.perf_counter() - start) / len(pairs) * 1e6)
        out[scorer.label] = statistics.median(per_item)
    return out


def code_throughput(workers: int, rounds: int) -> list[tuple[float, float]]:
    items = [item_view(i) for i in humaneval_items()]
    pairs = [(i["canonical_solution"], i) for i in items] + [("    return None\n", i) for i in items[:36]]
    scorer = build_scorer("code")
    results = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        scores = score_many(scorer, pairs, workers=workers)
        wall = time.perf_counter() - start
        sandbox._POOL.close()  # reaps the workers: their CPU, and their children's, lands in RUSAGE_CHILDREN
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert sum(s.value == 1.0 for s in scores) == 164, "a canonical solution failed"
        results.append((len(pairs) / wall, cpu / len(pairs) * 1e3))
    return results


def main() -> None:
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    for label, micros in text_overhead(rounds * 10).items():
        print(f"text  {label:9s} {micros:8.1f} µs/item")
    for i, (rate, cpu_ms) in enumerate(code_throughput(workers, rounds)):
        print(
            f"code  round {i + 1}: {rate:5.1f} samples/s with {workers} workers, {cpu_ms:.1f} ms CPU per sample"
        )


if __name__ == "__main__":
    main()
