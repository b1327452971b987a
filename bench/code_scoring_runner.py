"""How fast a job records code-scored rows when the model is fast: the runner scoring each row in its one
consumer thread (``score_workers=1``) vs in a pool of two (``score_workers=2``, what a job with a
``code`` scorer uses), against the same run unscored.

    .venv/bin/python -m bench.code_scoring_runner [--epochs 2] [--rounds 2] [--concurrency 16]

The model is a function that answers each HumanEval problem with its canonical solution after 5 ms (an API
far faster than the sandbox), called from ``--concurrency`` threads as a job calls an API model; rows go
to a results file (fsync off) through :class:`~modelfactory.job.scores.JobScores` (the ``code`` scorer in
its sandbox). Printed: rows/s per setting and round, with the load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="HumanEval x epochs rows (164 per epoch)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    from modelfactory import CallableModel
    from modelfactory.eval.tasks import expand_epochs, humaneval_items
    from modelfactory.job.runner import run_items
    from modelfactory.job.scores import JobScores

    items = expand_epochs(humaneval_items(), args.epochs)
    answers = {
        it.messages[-1]["content"]: it.meta["code_prefix"] + it.meta["canonical_solution"] for it in items
    }

    def fast(messages: list[dict[str, Any]], **_: Any) -> str:
        time.sleep(0.005)
        return "```python\n" + answers[messages[-1]["content"]] + "```"

    model = CallableModel(fn=fast)
    task = {"type": "humaneval", "scorers": [{"name": "code", "timeout_s": 5, "memory_mb": 1024}]}
    print(f"load before: {os.getloadavg()[0]:.1f}; {len(items)} rows, concurrency {args.concurrency}")
    for r in range(args.rounds):
        for label, workers in (("unscored", 0), ("scored, 1 thread", 1), ("scored, 2 threads", 2)):
            scores = JobScores.from_task(task, items) if workers else None
            with tempfile.TemporaryDirectory() as d:
                start = time.perf_counter()
                stats = run_items(model, items, concurrency=args.concurrency, results_path=Path(d) / "r.jsonl",
                                  progress=False, fsync=False, score=scores, score_workers=max(1, workers))  # fmt: skip
                elapsed = time.perf_counter() - start
            print(
                f"round {r + 1} {label:18s} {len(items) / elapsed:8.1f} rows/s ({elapsed:.2f} s, ok={stats.ok})"
            )
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
