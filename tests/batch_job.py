"""The job of tests/test_batch_paid_once.py: twelve items through one provider's batch API, results to a file.

The run that gets killed runs it as a process of its own (``python -m tests.batch_job PROVIDER URL OUT``,
which prints ``ok failed skipped``); the resumed run calls :func:`run_job` in the test's process (what
a resume reads is the results file and ``batches.json``, not anything of the dead process)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

N = 12


def run_job(provider: str, url: str, out: str | Path) -> Any:
    from modelfactory import LiteLLMModel, OpenAIServerModel
    from modelfactory.batch import BatchOptions
    from modelfactory.job.runner import run_items

    model: Any
    if provider == "openai":
        model = OpenAIServerModel(
            model_id="gpt-4o-mini",
            api_base=url + "/v1",
            api_key="sk-fake",
            max_retries=0,
            retry={"max_attempts": 1},
        )
    else:
        model = LiteLLMModel(
            model_id="anthropic/claude-test", api_base=url, api_key="test-key", max_tokens=64
        )
    items = [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(N)]
    return run_items(model, items, results_path=out, provider_batch=BatchOptions(poll_s=0.05), progress=False)


if __name__ == "__main__":
    stats = run_job(*sys.argv[1:4])
    print(stats.ok, stats.failed, stats.skipped)
