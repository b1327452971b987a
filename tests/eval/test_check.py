"""``modelfactory check`` reports a task's scoring problems, naming the key or the item."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelfactory.cli import main


def check(capsys: pytest.CaptureFixture[str], *overrides: str) -> tuple[int, str]:
    code = main(["check", "model=custom_callable", *overrides])
    return code, capsys.readouterr().out


def test_the_shipped_capitals_task_checks_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert check(capsys, "task=capitals") == (0, "0 problem(s)\n")


def test_bad_scorer_configs_name_their_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = check(
        capsys, "task=capitals", 'task.scorers=[{name: pattern, pattern: "(x"}, {name: exactt}]'
    )
    assert code == 1 and "2 problem(s)" in out
    assert "task.scorers[0].pattern: regex '(x' does not compile" in out
    assert "task.scorers[1].name: unknown scorer 'exactt'" in out and "did you mean 'exact'" in out


def test_targets_missing_from_the_task_or_from_items(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": "?"}) + "\n" for i in range(3)))
    code, out = check(capsys, "task=dataset", f"task.path={path}", "+task.scorers=[includes]")
    assert code == 1 and "no item has a 'target'" in out
    path.write_text(path.read_text() + json.dumps({"id": "q9", "prompt": "?", "target": "x"}) + "\n")
    code, out = check(capsys, "task=dataset", f"task.path={path}", "+task.scorers=[includes]")
    assert code == 1 and "'q0', 'q1', 'q2'" in out and "no 'target' (needed by includes)" in out
    code, out = check(capsys, "task=dataset", f"task.path={path}", "+task.scorers=[json]")
    assert code == 0  # json needs no target
