"""Decode throughput: TransformersModel vs raw ``model.generate`` on the same weights and inputs (issue 3).

    .venv/bin/python -m bench.transformers_decode [--rounds 3] [--tokens 64] [--dtypes float32,bfloat16]
                                                  [--batches 1,8]

A SmolLM-135M-shaped model with random weights (bench/_smollm.py, built once into ~/.cache). Both sides
decode greedily exactly ``--tokens`` new tokens (``min_new_tokens`` keeps eos away) from the same
chat-templated prompts, left-padded alike for batch 8. Raw: ``model.generate(input_ids, ...)`` on tensors
prepared beforehand. Ours: ``model(messages)`` / ``model.generate_batch(conversations)``, i.e. including
the chat template, tokenization, stop machinery and decoding. Contenders alternate within each round;
printed: median tokens/s and the median of the per-round ratios (target >= 0.95), plus our batch-8 over
batch-1 throughput (target >= 4).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench._smollm import conversations, ensure, median_ratio, setup_torch


def measure(
    path: str, dtype: str, batches: list[int], n: int, rounds: int
) -> dict[int, dict[str, list[float]]]:
    """tokens/s samples of raw ``generate`` and of our model, per batch size, alternating."""
    import torch

    from modelfactory.backends.transformers import TransformersModel

    # prompt_cache off: raw generate prefills the whole prompt on every call, so ours must too
    ours = TransformersModel(
        model_id=path, dtype=dtype, device="cpu", temperature=0, max_new_tokens=n, prompt_cache=False
    )
    raw_model, pad_id = ours.model, ours.runtime.pad_id  # the very same weights: only the call path differs
    inputs: dict[int, Any] = {}
    for b in batches:
        rows = [ours._encode(ours._request(c, None, None, None, None, {})) for c in conversations(b)]
        prep = ours._prepare(rows)
        inputs[b] = (prep.input_ids, prep.gen_kwargs["attention_mask"])

    def run_raw(b: int) -> float:
        ids, mask = inputs[b]
        start = time.perf_counter()
        with torch.inference_mode():
            out = raw_model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=pad_id,
            )
        elapsed = time.perf_counter() - start
        assert out.shape[1] - ids.shape[1] == n
        return b * n / elapsed

    def run_ours(b: int) -> float:
        convs = conversations(b)
        start = time.perf_counter()
        replies = (
            [ours(convs[0], min_new_tokens=n)] if b == 1 else ours.generate_batch(convs, min_new_tokens=n)
        )
        elapsed = time.perf_counter() - start
        assert all(r.token_usage.output_tokens == n for r in replies)
        return b * n / elapsed

    for b in batches:  # warm-up: first calls pay one-off allocations
        run_raw(b), run_ours(b)
    out: dict[int, dict[str, list[float]]] = {b: {"raw": [], "ours": []} for b in batches}
    for r in range(rounds):
        for b in batches:
            pair = [("raw", run_raw), ("ours", run_ours)]
            for name, fn in pair if r % 2 == 0 else pair[::-1]:
                out[b][name].append(fn(b))
    ours.free()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    setup_torch()
    import torch

    from modelfactory.backends.transformers import cpu_has_fast_bf16

    path = str(ensure())
    n = args.tokens
    batches = [int(b) for b in args.batches.split(",")]
    print(
        f"model: {path}\ntorch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_fast_bf16()}"
    )
    print(f"{n} new tokens, greedy, {args.rounds} rounds\n")
    results: dict[tuple[str, int], dict[str, list[float]]] = {}
    for dtype in args.dtypes.split(","):
        for b, samples in measure(path, dtype, batches, n, args.rounds).items():
            results[(dtype, b)] = samples

    print(f"{'dtype':>9} {'batch':>5} {'raw tok/s':>10} {'ours tok/s':>10} {'ours/raw':>9}")
    for (dtype, b), s in results.items():
        print(
            f"{dtype:>9} {b:>5} {statistics.median(s['raw']):>10.1f} {statistics.median(s['ours']):>10.1f} "
            f"{median_ratio(s['ours'], s['raw']):>8.3f}x"
        )
    if len(batches) > 1:
        lo, hi = min(batches), max(batches)
        print(f"\nbatch scaling through generate_batch (ours, batch {hi} / batch {lo} tokens/s):")
        for dtype in args.dtypes.split(","):
            print(
                f"{dtype:>9}: {median_ratio(results[(dtype, hi)]['ours'], results[(dtype, lo)]['ours']):.2f}x"
            )


if __name__ == "__main__":
    main()
