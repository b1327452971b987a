"""The job of tests/test_batch_paid_once.py: twelve items through one provider's batch API, results to a file.

The run that gets killed runs it in a process of its own (:func:`killed_run`, forked from a
multiprocessing forkserver that imported modelfactory and the openai SDK once); the resumed run
calls :func:`run_job` in the test's process (what a resume reads is the results file and
``batches.json``, not anything of the dead process)."""

from __future__ import annotations

import os
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


# what the forkserver imports before it forks any run (the imports are most of a fresh process's time)
PRELOAD = [
    "tests.batch_job",
    "openai",
    "modelfactory.backends.openai",
    "modelfactory.backends.litellm",
    "modelfactory.batch",
    "modelfactory.job.runner",
]


def killed_run(provider: str, url: str, out: str, crash_at: str | None, log: str) -> None:
    """:func:`run_job` in a forked process, its output to ``log``; ``crash_at``: the step at which the
    driver's crash hook (``MODELFACTORY_BATCH_CRASH_AT``) ends the process."""
    from modelfactory._batchapi import CRASH_ENV

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.pop(CRASH_ENV, None)
    if crash_at is not None:
        os.environ[CRASH_ENV] = crash_at
    stats = run_job(provider, url, out)
    print(stats.ok, stats.failed, stats.skipped, flush=True)
