"""torch's OpenMP wait policy, idle and under CPU load: ``modelfactory serve`` in front of
``transformers_smollm2`` (dtype auto), non-streamed and streamed requests, under three policies side by
side in one run: libgomp's default spin, ``OMP_WAIT_POLICY=PASSIVE`` (modelfactory's policy until the
guard), and modelfactory's contention guard (the spin, throttled while the server waits for CPUs;
backends/transformers/_threads.py) (issue 27).

    .venv/bin/python -m bench.omp_wait_policy [--requests 4] [--tokens 16] [--rounds 2] [--hogs 0,2]

For each ``--hogs`` count (0: an idle machine; 2: two CPU-bound processes, as in the second pass of
scripts/test.sh), each round starts one server per policy (in turn, so drift hits all alike), warms it
with one request, then sends ``--requests`` non-streamed requests one after another, then as many
streamed. Printed per policy and kind: the median seconds per request, the server's CPU-seconds per
request (all its threads, from /proc), and each policy's ratio to the guard's. The spin is asked for
explicitly as ``GOMP_SPINCOUNT=300000``, libgomp's own default (a policy variable set: no guard). Each
server's libgomp says what it applied (``OMP_DISPLAY_ENV``), printed as its GOMP_SPINCOUNT.

Measured 2026-12-07 19:03 UTC, idle machine (load 0.5 before), 2-core Intel Xeon (avx2 avx512_bf16
avx512_vnni amx_tile), torch 2.13.0, transformers 5.24.0 (bfloat16), ``--hogs 0,2 --rounds 3 --requests 3
--tokens 32``, medians, s wall [server CPU-s] per request:
idle: spin non-streamed 0.41 [0.80], streamed 0.86 [1.02]; PASSIVE 0.81 [0.93], 0.85 [1.03]; guard 0.44
[0.85], 0.79 [0.98] (PASSIVE / guard 1.85x wall non-streamed; spin / guard 0.94x).
2 hogs: spin 1.54 [1.81], 1.20 [0.89]; PASSIVE 1.30 [0.80], 1.31 [0.87]; guard 1.30 [0.76], 1.07 [0.81]
(spin / guard 1.19x wall and 2.38x CPU non-streamed; PASSIVE / guard 1.00x).
An earlier run on the same machine under heavier load (2 hogs beside a test-suite run, 2 rounds):
non-streamed spin 10.46 s [6.06], PASSIVE 1.69 [0.68], guard 1.67 [0.74] (spin / guard 6.25x wall).
The spin's cost under load depends on the machine: on the 2-core AMD EPYC of earlier runs it was 37x
under two hogs (36.24 s vs PASSIVE's 0.97 s per non-streamed request, load 6-11 besides).
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

from bench._common import PY, clean_env, proc_cpu, serve

POLICIES = {  # name -> environment of the server process
    "spin: libgomp's default": {"GOMP_SPINCOUNT": "300000"},  # a policy variable set: no guard
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},  # modelfactory's policy before the guard
    "guard: modelfactory's": {},  # libgomp's spin, throttled while the server waits for CPUs
}
HOG = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"


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
            walls, cpu0 = [], proc_cpu(proc.pid)
            for i in range(requests):
                start = time.perf_counter()
                _request(url, served, tokens, stream, i)
                walls.append(time.perf_counter() - start)
            out[kind] = (statistics.median(walls), (proc_cpu(proc.pid) - cpu0) / requests)
        return out


def measure(hogs: int, args: argparse.Namespace) -> dict[tuple[str, str], tuple[float, float]]:
    """Every policy's medians (s wall, server CPU-s per request) beside ``hogs`` CPU-bound processes."""
    print(f"\n{hogs} hogs; load average {os.getloadavg()[0]:.2f} before them", flush=True)
    procs = [subprocess.Popen([PY, "-c", HOG]) for _ in range(hogs)]
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {p: {} for p in POLICIES}
    try:
        names = list(POLICIES)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                for kind, figures in one_server(POLICIES[name], args.requests, args.tokens).items():
                    samples[name].setdefault(kind, []).append(figures)
                    print(
                        f"  round {r}: {name}, {kind}: {figures[0]:.2f} s, {figures[1]:.2f} CPU-s", flush=True
                    )
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return {
        (name, kind): (statistics.median(f[0] for f in figs), statistics.median(f[1] for f in figs))
        for name, kinds in samples.items()
        for kind, figs in kinds.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--hogs", default="0,2", help="CPU-bound processes beside the server, one measurement each (0: idle)"
    )
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs; {args.requests} requests of up to {args.tokens} tokens per kind and round")
    tables = {int(h): measure(int(h), args) for h in args.hogs.split(",")}
    guard = "guard: modelfactory's"
    for hogs, table in tables.items():
        print(f"\n{hogs} hogs, per request, median over {args.rounds} rounds: s wall [server CPU-s]")
        for (name, kind), (wall, cpu) in table.items():
            print(f"{name:>26} {kind:>13}: {wall:7.2f} s [{cpu:6.2f}]")
        for name in POLICIES:
            if name == guard:
                continue
            for kind in ("non-streamed", "streamed"):
                (ow, oc), (gw, gc) = table[name, kind], table[guard, kind]
                print(f"{name + ' / guard, ' + kind:>50}: {ow / gw:5.2f}x wall, {oc / gc:5.2f}x CPU")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
