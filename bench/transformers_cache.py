"""Weight cache: building an already-loaded TransformersModel again vs loading it cold (issue 3).

    .venv/bin/python -m bench.transformers_cache [--rounds 5] [--dtype float32]

The SmolLM-135M-shaped model of bench/_smollm.py (269 MB of bf16 safetensors, in the OS page cache after
the first round, so "cold" is the best case of a cold load: no disk reads). Each round, alternating:
``cold``: ``clear_cache()`` then ``TransformersModel(...).load()`` (tokenizer + from_pretrained + .to);
``cached``: ``TransformersModel(..., temperature=<another value>).load()`` on the same weights, as a
sweep over generation parameters does. Printed: median seconds and the median per-round ratio
cached / cold (target <= 5%).
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench._smollm import ensure, median_ratio, setup_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    setup_torch()
    from modelfactory.backends.transformers import TransformersModel, clear_cache

    path = str(ensure())

    def build(temperature: float) -> float:
        start = time.perf_counter()
        TransformersModel(model_id=path, dtype=args.dtype, device="cpu", temperature=temperature).load()
        return time.perf_counter() - start

    def cold() -> float:
        clear_cache()
        return build(0.7)

    cold()  # first import of torch/transformers and the page cache: not part of either figure
    samples: dict[str, list[float]] = {"cold": [], "cached": []}
    for r in range(args.rounds):
        samples["cold"].append(cold())
        samples["cached"].append(build(0.1 + r / 10))
    print(f"model: {path}, dtype {args.dtype}, {args.rounds} rounds")
    for name, values in samples.items():
        print(f"{name:>7}: median {statistics.median(values) * 1e3:9.3f} ms")
    print(f"cached / cold: {median_ratio(samples['cached'], samples['cold']) * 100:.4f}%")


if __name__ == "__main__":
    main()
