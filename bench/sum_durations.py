"""Summed test time per file from pytest ``--durations=0`` logs (call + setup + teardown of every test).

    python bench/sum_durations.py LOG [LOG ...]            # one column per log, files by summed time
    python bench/sum_durations.py --top 40 LOG             # the 40 costliest test phases of a log
    python bench/sum_durations.py --common BASE NEW        # only the test ids both logs timed, and NEW/BASE

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


def per_test(phases: list[tuple[float, str, str]]) -> dict[str, float]:
    """Each test id's call + setup + teardown."""
    tests: dict[str, float] = defaultdict(float)
    for seconds, _, test in phases:
        tests[test] += seconds
    return dict(tests)


def common(base: Path, new: Path, rows: int) -> None:
    """Summed time of the test ids timed in both logs, per file, and NEW's total over BASE's. A test
    present in only one log (added, removed, renamed, or under pytest's 0.005 s print limit) is counted
    apart, so that "the same tests" compare like with like."""
    old_tests, new_tests = per_test(parse(base)[1]), per_test(parse(new)[1])
    shared = old_tests.keys() & new_tests.keys()
    by_file: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for test in shared:
        path = test.split("::", 1)[0]
        by_file[path][0] += old_tests[test]
        by_file[path][1] += new_tests[test]
    width = max([len(f) for f in by_file] + [len("file (common test ids)")])
    print(f"{'file (common test ids)':{width}} {base.stem:>14} {new.stem:>14} {'new-base':>10}")
    for path, (old, now) in sorted(by_file.items(), key=lambda kv: -kv[1][0])[: rows or None]:
        print(f"{path:{width}} {old:14.1f} {now:14.1f} {now - old:10.1f}")
    old_total = sum(old_tests[t] for t in shared)
    new_total = sum(new_tests[t] for t in shared)
    print(f"{'TOTAL (s)':{width}} {old_total:14.1f} {new_total:14.1f} {new_total - old_total:10.1f}")
    ratio = f"{new_total / old_total:.3f}" if old_total else "-"
    print(f"common test ids: {len(shared)}; new/base = {ratio}")
    for log, tests in ((base, old_tests), (new, new_tests)):
        only = tests.keys() - shared
        print(f"only in {log.stem}: {len(only)} test ids, {sum(tests[t] for t in only):.1f} s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=0, help="list the N costliest test phases of each log")
    parser.add_argument("--files", type=int, default=40, help="rows of the per-file table (0: all)")
    parser.add_argument(
        "--common", action="store_true", help="two logs, BASE NEW: sum only the test ids timed in both"
    )
    args = parser.parse_args(argv)
    if args.common:
        if len(args.logs) != 2:
            parser.error("--common takes exactly two logs: BASE NEW")
        base, new = args.logs
        common(base, new, rows=args.files)
        return 0

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
