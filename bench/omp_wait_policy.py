"""torch's OpenMP wait policy under CPU load: ``modelfactory serve`` in front of ``transformers_smollm2``
(dtype auto), non-streamed and streamed requests, with libgomp's default spin (the old policy) and with
modelfactory's (``OMP_WAIT_POLICY=PASSIVE``, set before it imports torch), side by side in one run,
beside two CPU-bound processes like the second pass of scripts/test.sh (issue 27).

    .venv/bin/python -m bench.omp_wait_policy [--requests 4] [--tokens 16] [--rounds 2] [--hogs 2]

Each round starts one server per policy (in turn, so drift hits both alike), warms it with one request,
then sends ``--requests`` non-streamed requests one after another, then as many streamed. Printed per
policy and kind: the median seconds per request, the server's CPU-seconds per request (all its threads,
from /proc), and the ratios old / new. The old policy is asked for explicitly as
``GOMP_SPINCOUNT=300000``, libgomp's own default (the variable set, modelfactory leaves the policy alone).
Each server's libgomp says what it applied (``OMP_DISPLAY_ENV``), printed as its GOMP_SPINCOUNT.

Measured 2026-12-07 on 2 cores (AMD EPYC, AVX512-BF16; bfloat16), load 6-11 from other work besides the
two hogs, 3 requests of up to 16 tokens per kind, torch 2.13.0, transformers 5.24.0. 2 rounds (medians):
old non-streamed 36.24 s [8.74 CPU-s], streamed 3.58 s [0.76]; new non-streamed 0.97 s [0.43], streamed
1.75 s [0.55]; old / new 37.2x wall and 20.5x CPU non-streamed, 2.1x and 1.4x streamed (an earlier
1-round run: 23.57 s [5.74] -> 0.72 s [0.32] non-streamed, 32.7x / 17.9x). Not yet measured on an idle
machine (``--hogs 0``), where PASSIVE's cost (waking the team's threads at each region instead of
finding them spinning) would show.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench._common import PY, clean_env, serve

POLICIES = {  # name -> environment of the server process
    "old: libgomp default spin": {"GOMP_SPINCOUNT": "300000"},
    "new: modelfactory's (PASSIVE)": {},
}
HOG = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _request(url: str, served: str, tokens: int, stream: bool, i: int) -> None:
    body = {
        "model": served,
        "messages": [{"role": "user", "content": f"Name the capital city of France. ({i})"}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": stream,
    }
    req = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=900) as resp:
        resp.read()


def one_server(env_extra: dict[str, str], requests: int, tokens: int) -> dict[str, tuple[float, float]]:
    """Seconds and server CPU-seconds of each request kind, per request (medians / means)."""
    env = clean_env()
    for var in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):  # torch's defaults, but the policy
        env.pop(var, None)
    env.update(env_extra)
    env["OMP_DISPLAY_ENV"] = "VERBOSE"  # libgomp prints what it applied (GOMP_SPINCOUNT) as torch loads it
    with serve(["model=transformers_smollm2"], env, "/tmp/mf-bench-omp") as server:
        url, served, proc = server.url, server.name, server.proc
        lines = [ln for ln in server.startup if "GOMP_SPINCOUNT = " in ln]
        spin = lines[-1].split("=", 1)[1].strip().strip("'") if lines else "?"
        print(
            f"  server for {env_extra or 'no policy variable'}: libgomp GOMP_SPINCOUNT = {spin}", flush=True
        )
        _request(url, served, tokens, False, -1)  # warm-up: load, first-call costs
        out = {}
        for kind, stream in (("non-streamed", False), ("streamed", True)):
            walls, cpu0 = [], _proc_cpu(proc.pid)
            for i in range(requests):
                start = time.perf_counter()
                _request(url, served, tokens, stream, i)
                walls.append(time.perf_counter() - start)
            out[kind] = (statistics.median(walls), (_proc_cpu(proc.pid) - cpu0) / requests)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--hogs", type=int, default=2, help="CPU-bound processes beside the server (0: none)")
    args = ap.parse_args()

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before the hogs; {args.hogs} hogs")
    hogs = [subprocess.Popen([PY, "-c", HOG]) for _ in range(args.hogs)]
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {p: {} for p in POLICIES}
    try:
        names = list(POLICIES)
        for r in range(args.rounds):
            for name in names[r % 2 :] + names[: r % 2]:
                for kind, figures in one_server(POLICIES[name], args.requests, args.tokens).items():
                    samples[name].setdefault(kind, []).append(figures)
                    print(
                        f"  round {r}: {name}, {kind}: {figures[0]:.2f} s, {figures[1]:.2f} CPU-s", flush=True
                    )
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(
        f"\nper request (up to {args.tokens} tokens), median over {args.rounds} rounds: s wall [server CPU-s]"
    )
    table = {}
    for name, kinds in samples.items():
        for kind, figs in kinds.items():
            table[name, kind] = (statistics.median(f[0] for f in figs), statistics.median(f[1] for f in figs))
            print(f"{name:>32} {kind:>13}: {table[name, kind][0]:7.2f} s [{table[name, kind][1]:6.2f}]")
    old, new = names
    for kind in ("non-streamed", "streamed"):
        (ow, oc), (nw, nc) = table[old, kind], table[new, kind]
        print(f"{'old / new, ' + kind:>46}: {ow / nw:5.1f}x wall, {oc / nc:5.1f}x CPU")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
