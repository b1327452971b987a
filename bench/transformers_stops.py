"""Stop sequences active: TransformersModel vs smolagents' ``TransformersModel`` on the same model (issue 3).

    pip install 'modelfactory[bench]'     # smolagents + accelerate (its TransformersModel needs accelerate)
    .venv/bin/python -m bench.transformers_stops [--rounds 3] [--tokens 64] [--dtypes float32,bfloat16]
                                                 [--no-agent]   # skip the agent loop, by far the slowest

The SmolLM-135M-shaped random model of bench/_smollm.py, batch 1, one prompt, both libraries loading the
same directory in the same dtype. ``armed``, ``boundary`` and ``inside`` repeat one prompt, so our prompt
cache is off there (both prefill every prompt in full). Four scenarios, contenders alternating, printed in
this order: first what favours no one and what an agent really does, last the best case for us (labelled
so in the output):

- ``armed`` (neutral): smolagents CodeAgent's stops (``Observation:``, ``<end_code>``, ``Calling
  tools:``) are active but never occur; greedy, exactly ``--tokens`` tokens each (``min_new_tokens``).
  This is the cost of the stop machinery itself.
- ``agent`` (typical use, with our prompt cache): a CodeAgent-shaped loop of ``--steps`` calls with the
  agent stops armed (never firing, ``--tokens`` tokens each, greedy): smolagents' real CodeAgent system
  prompt (~8.5k characters) and a task, then after each step the reply and an ``Observation:`` message
  appended, the same conversation sent to both libraries. Here our ``prompt_cache`` reuses the KV of the
  prefix a step shares with the step before (it is cleared before each loop, so even the system prompt is
  prefilled once per loop); smolagents prefills the whole conversation on every step. Timed per loop.
- ``boundary`` (neutral): seeded sampling (the same seed and RNG state for both, so the same tokens); the
  stop is a piece of text that ends exactly at a token boundary about half-way through the reply. Both
  libraries stop on that token (checked: same text, same token count).
- ``inside`` (the best case for us): the same, but the stop ends inside a token. We stop on that token;
  smolagents checks ``endswith`` after each token, never sees it, and decodes to the token limit before
  trimming. Both return the same text (checked). How often a stop ends mid-token depends on the
  tokenizer and the stop: this is where we gain most, not a typical case.

Printed: median seconds per reply (per loop for ``agent``) and the median of the per-round ratios
smolagents / ours (> 1: we are faster). Target (issue 3): >= 1.2 where a stop fires mid-token or an agent
loop repeats its prefix; ~1.0 where nothing favours either side.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench._smollm import PROMPTS, ensure, median_ratio, setup_torch

AGENT_STOPS = ["Observation:", "<end_code>", "Calling tools:"]


def import_smolagents() -> Any:
    try:
        import accelerate  # noqa: F401  (smolagents' TransformersModel passes device_map, which needs it)
        import smolagents
    except ImportError as exc:
        raise SystemExit(
            f"{exc.name} is missing: pip install 'modelfactory[bench]' (smolagents, accelerate)"
        ) from None
    return smolagents


def agent_conversations(smolagents: Any, ours: Any, n: int, steps: int) -> list[list[dict[str, str]]]:
    """The conversation of each step of a CodeAgent-shaped loop (replies generated once, by our model)."""

    class _NoModel:
        model_id = "none"

    system = smolagents.CodeAgent(tools=[], model=_NoModel()).system_prompt
    conv = [
        {"role": "system", "content": system},
        {"role": "user", "content": f"New task:\n{PROMPTS[0]}"},
    ]
    out = []
    for k in range(steps):
        out.append(list(conv))
        reply = ours(conv, stop_sequences=AGENT_STOPS, temperature=0, min_new_tokens=n).content
        conv += [
            {"role": "assistant", "content": reply},
            {
                "role": "user",
                "content": f"Observation:\nExecution logs:\nLast output from code snippet:\n{k * 7}",
            },
        ]
    ours.clear_prompt_cache()
    return out


def measure(
    smolagents: Any, path: str, dtype: str, n: int, rounds: int, steps: int
) -> tuple[list[tuple[Any, ...]], tuple[list[int], list[int]]]:
    """Rows (dtype, scenario, ours s, smolagents s, tokens), and the agent loop's prompt / reused tokens
    (``steps`` 0: no agent loop)."""
    import torch

    from modelfactory.backends.transformers import TransformersModel

    ours_msgs = [{"role": "user", "content": PROMPTS[0]}]
    smol_msgs = [{"role": "user", "content": [{"type": "text", "text": PROMPTS[0]}]}]
    # armed / boundary / inside repeat one prompt: the prompt cache would spare ours its prefill, not theirs
    ours = TransformersModel(model_id=path, dtype=dtype, device="cpu", max_new_tokens=n, prompt_cache=False)
    agent = TransformersModel(model_id=path, dtype=dtype, device="cpu", max_new_tokens=n)  # same weights
    smol = smolagents.TransformersModel(model_id=path, device_map="cpu", torch_dtype=dtype, max_new_tokens=n)

    # a seeded sampled reply of n tokens; stops are cut from it so that both libraries generate the same
    full = ours(ours_msgs, temperature=0.8, seed=0, min_new_tokens=n)
    ids = full.raw["generated_token_ids"]
    pieces = [ours.tokenizer.decode(ids[: k + 1], skip_special_tokens=True) for k in range(len(ids))]
    # smolagents decodes token by token and checks endswith on the concatenation
    stream = [""]
    for token in ids:
        stream.append(stream[-1] + ours.tokenizer.decode([token], skip_special_tokens=True))
    stream = stream[1:]

    def first_seen(stop: str) -> int:
        return next(k for k, s in enumerate(stream) if s.endswith(stop))

    # ``inside``: a stop ending one character before the end of a token in the second half of the reply
    inside = next(
        p[-5:-1]
        for k, p in enumerate(pieces)
        if k >= n // 2 and len(p) - len(pieces[k - 1]) >= 2 and full.content.find(p[-5:-1]) == len(p) - 5
    )
    # ``boundary``: a stop ending exactly where a token ends, seen there first by both ways of decoding
    boundary = next(
        p[-4:]
        for k, p in enumerate(pieces)
        if k >= n // 2
        and p[-4:].strip()
        and full.content.find(p[-4:]) == len(p) - 4
        and stream[k] == p
        and first_seen(p[-4:]) == k
    )
    stops = {"inside": inside, "boundary": boundary}
    expected = {name: full.content[: full.content.index(stop)] for name, stop in stops.items()}
    stopped_at: dict[str, int] = {}

    def ours_stopping(name: str) -> float:
        t = time.perf_counter()
        reply = ours(ours_msgs, stop_sequences=[stops[name]], temperature=0.8, seed=0, min_new_tokens=n)
        elapsed = time.perf_counter() - t
        assert reply.content == expected[name], (name, reply.content, expected[name])
        stopped_at[f"o{name}"] = reply.token_usage.output_tokens
        return elapsed

    def smol_stopping(name: str) -> float:
        t = time.perf_counter()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            reply = smol(
                smol_msgs, stop_sequences=[stops[name]], do_sample=True, temperature=0.8, min_new_tokens=n
            )
        elapsed = time.perf_counter() - t
        assert reply.content == expected[name], (name, reply.content, expected[name])
        stopped_at[f"s{name}"] = reply.token_usage.output_tokens
        return elapsed

    def ours_armed() -> float:
        t = time.perf_counter()
        reply = ours(ours_msgs, stop_sequences=AGENT_STOPS, temperature=0, min_new_tokens=n)
        assert reply.token_usage.output_tokens == n
        return time.perf_counter() - t

    def smol_armed() -> float:
        t = time.perf_counter()
        reply = smol(smol_msgs, stop_sequences=AGENT_STOPS, do_sample=False, min_new_tokens=n)
        assert reply.token_usage.output_tokens == n
        return time.perf_counter() - t

    loop = agent_conversations(smolagents, agent, n, steps) if steps else []
    smol_loop = [
        [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in conv]
        for conv in loop
    ]
    cached: list[int] = []

    def ours_agent() -> float:
        agent.clear_prompt_cache()  # each loop starts cold: the system prompt is prefilled once per loop
        cached.clear()
        t = time.perf_counter()
        for conv in loop:
            reply = agent(conv, stop_sequences=AGENT_STOPS, temperature=0, min_new_tokens=n)
            assert reply.token_usage.output_tokens == n
            cached.append(reply.raw["cached_prompt_tokens"])
        return time.perf_counter() - t

    def smol_agent() -> float:
        t = time.perf_counter()
        for conv in smol_loop:
            reply = smol(conv, stop_sequences=AGENT_STOPS, do_sample=False, min_new_tokens=n)
            assert reply.token_usage.output_tokens == n
        return time.perf_counter() - t

    contenders = [
        ("oa", ours_armed),
        ("sa", smol_armed),
        ("oboundary", lambda: ours_stopping("boundary")),
        ("sboundary", lambda: smol_stopping("boundary")),
        ("oinside", lambda: ours_stopping("inside")),
        ("sinside", lambda: smol_stopping("inside")),
        ("og", ours_agent),
        ("sg", smol_agent),
    ][: 8 if steps else 6]
    for _, fn in contenders:  # warm-up, and the checks
        fn()
    # a stop at a token boundary is caught by both on the same token: the neutral case really is neutral
    assert stopped_at["oboundary"] == stopped_at["sboundary"], stopped_at
    samples: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for r in range(rounds):
        for name, fn in contenders if r % 2 == 0 else contenders[::-1]:
            samples[name].append(fn())
    prompt_tokens = [len(ours._encode(ours._request(c, None, None, None, None, {})).ids) for c in loop]
    ours.free()
    tokens = {name: f"{stopped_at['o' + name]} / {stopped_at['s' + name]}" for name in stops}
    rows = [(dtype, "armed, never occur (neutral)", samples["oa"], samples["sa"], f"{n} / {n}")]
    if steps:
        rows.append(
            (
                dtype,
                "agent loop (typical use)",
                samples["og"],
                samples["sg"],
                f"{steps} x {n} / {steps} x {n}",
            )
        )
    rows += [
        (
            dtype,
            "stop on a token boundary (neutral)",
            samples["oboundary"],
            samples["sboundary"],
            tokens["boundary"],
        ),
        (
            dtype,
            "stop inside a token (BEST CASE for us)",
            samples["oinside"],
            samples["sinside"],
            tokens["inside"],
        ),
    ]
    return rows, (prompt_tokens, list(cached))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=4, help="calls per agent loop")
    parser.add_argument("--no-agent", action="store_true", help="skip the agent loop (the slowest)")
    args = parser.parse_args()
    setup_torch()
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # smolagents passes no attention mask: one warning per call
    smolagents = import_smolagents()
    path, n = str(ensure()), args.tokens
    print(
        "Neutral and typical scenarios first; the last row of each dtype is the best case for us (a stop "
        "that ends inside a token, which smolagents' endswith check misses), not a typical one."
    )
    print(
        f"model: {path}; torch {torch.__version__}, {torch.get_num_threads()} threads; smolagents "
        f"{smolagents.__version__}; {n} new tokens, batch 1, {args.rounds} rounds\n"
    )
    print(
        f"{'dtype':>9} {'scenario':>38} {'ours s':>8} {'smolagents s':>13} {'tokens ours/smol':>17} "
        f"{'smol/ours':>10}",
        flush=True,
    )
    steps = 0 if args.no_agent else args.steps
    for dtype in args.dtypes.split(","):  # each dtype's rows as soon as they are measured
        rows, (prompt_tokens, cached) = measure(smolagents, path, dtype, n, args.rounds, steps)
        for dtype, scenario, o, s, tokens in rows:
            print(
                f"{dtype:>9} {scenario:>38} {statistics.median(o):>8.3f} {statistics.median(s):>13.3f} "
                f"{tokens:>17} {median_ratio(s, o):>9.3f}x",
                flush=True,
            )
        if steps:
            print(
                f"{'':>9} agent loop: prompt tokens per step {prompt_tokens}; ours reused {cached}",
                flush=True,
            )


if __name__ == "__main__":
    main()
