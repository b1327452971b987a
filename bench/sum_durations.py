"""Summed test time per file from pytest ``--durations=0`` logs (call + setup + teardown of every test).

    python bench/sum_durations.py LOG [LOG ...]            # one column per log, files by summed time
    python bench/sum_durations.py --top 40 LOG             # the 40 costliest test phases of a log

Summed time is what the suite costs in CPU-bound worker time: with xdist it is larger than the wall clock
and does not depend on how the tests were spread over workers. pytest prints durations under 0.005 s
only with ``-vv``; those are left out (they add up to seconds over the whole suite, in every log alike).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"^\s*(\d+(?:\.\d+)?)s (call|setup|teardown)\s+(\S+?)::(.+)$")
OUTCOME = re.compile(r"^=* ?(\d+ (?:passed|failed|errors?)\b.*?) in ([\d.]+)s")


def parse(log: Path) -> tuple[dict[str, float], list[tuple[float, str, str]], str]:
    per_file: dict[str, float] = defaultdict(float)
    phases: list[tuple[float, str, str]] = []
    outcome = "?"
    for line in log.read_text(errors="replace").splitlines():
        if m := LINE.match(line):
            seconds, phase, path, test = float(m[1]), m[2], m[3], m[4]
            per_file[path] += seconds
            phases.append((seconds, phase, f"{path}::{test}"))
        elif m := OUTCOME.search(line):
            outcome = f"{m[1]} (wall {float(m[2]):.0f} s)"
    return dict(per_file), phases, outcome


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=0, help="list the N costliest test phases of each log")
    parser.add_argument("--files", type=int, default=40, help="rows of the per-file table (0: all)")
    args = parser.parse_args(argv)

    parsed = {log: parse(log) for log in args.logs}
    if args.top:
        for log, (_, phases, _) in parsed.items():
            print(f"## {log}")
            for seconds, phase, test in sorted(phases, reverse=True)[: args.top]:
                print(f"{seconds:8.2f} {phase:8} {test}")
        return 0

    files = sorted(
        {f for per_file, _, _ in parsed.values() for f in per_file},
        key=lambda f: -max(p[0].get(f, 0.0) for p in parsed.values()),
    )
    names = [log.stem for log in args.logs]
    width = max(len(f) for f in files) if files else 10
    print(f"{'file':{width}} " + " ".join(f"{n:>14}" for n in names))
    for f in files[: args.files or None]:
        print(f"{f:{width}} " + " ".join(f"{p[0].get(f, 0.0):14.1f}" for p in parsed.values()))
    print(f"{'TOTAL (s)':{width}} " + " ".join(f"{sum(p[0].values()):14.1f}" for p in parsed.values()))
    for log, (_, _, outcome) in parsed.items():
        print(f"{log.stem}: {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
