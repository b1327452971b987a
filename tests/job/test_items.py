"""modelfactory.job.items: dataset files (every problem at once), prompt items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelfactory import ConfigError
from modelfactory.job.items import load_dataset, prompt_item

ROOT = Path(__file__).resolve().parents[2]


def test_example_datasets_load() -> None:
    jsonl = load_dataset(ROOT / "examples" / "dataset.jsonl")
    assert len(jsonl) >= 10 and len({i.id for i in jsonl}) == len(jsonl)
    by_id = {i.id: i for i in jsonl}
    assert by_id["sea-2"].messages[0] == {"role": "system", "content": "Answer in one line."}
    assert by_id["multi-turn"].messages[-1]["role"] == "user"
    yaml_items = load_dataset(ROOT / "examples" / "dataset.yaml")
    assert [i.id for i in yaml_items] == ["sea-1", "capital-fr", "math-1"]
    assert yaml_items[2].messages[0]["role"] == "system"


def test_dataset_json_array_and_meta(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"id": 7, "prompt": "hi", "expected": "hello"}]), encoding="utf-8")
    (item,) = load_dataset(path)
    assert item.id == "7" and item.meta == {"expected": "hello"}


def _problems(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_dataset(path)
    return str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    msg = _problems(tmp_path / "nope.jsonl")
    assert "not found" in msg and "nope.jsonl" in msg


def test_invalid_utf8_names_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"id": "a", "prompt": "ok"}\n{"id": "b", "prompt": "caf\xe9"}\n')
    msg = _problems(path)
    assert "line 2" in msg and "invalid UTF-8" in msg and "byte offset 54" in msg and "0xe9" in msg


def test_invalid_json_and_missing_fields_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"id": "ok", "prompt": "fine"}',
                '{"id": "broken", "prompt": ',
                '{"prompt": "no id"}',
                '{"id": "nothing"}',
                '{"id": "both", "prompt": "a", "messages": [{"role": "user", "content": "b"}]}',
                '{"id": "badrole", "messages": [{"role": "wizard", "content": "b"}]}',
                '{"id": "ok", "prompt": "dup"}',
                "[1, 2]",
            ]
        ),
        encoding="utf-8",
    )
    msg = _problems(path)
    assert "line 2: invalid JSON" in msg
    assert "line 3: missing 'id'" in msg
    assert "line 4: missing 'messages' (or 'prompt')" in msg
    assert "line 5: has both" in msg
    assert "line 6: invalid 'messages'" in msg and "wizard" in msg
    assert "line 7: duplicate id 'ok' (first at line 1)" in msg
    assert "line 8: expected an object" in msg


def test_yaml_errors_and_formats(tmp_path: Path) -> None:
    bad = tmp_path / "d.yaml"
    bad.write_text("- id: a\n  prompt: [unclosed\n", encoding="utf-8")
    assert "invalid YAML" in _problems(bad)
    mapping = tmp_path / "m.yml"
    mapping.write_text("id: a\nprompt: b\n", encoding="utf-8")
    assert "expected a YAML list" in _problems(mapping)
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    assert "no items" in _problems(empty)
    other = tmp_path / "d.csv"
    other.write_text("id,prompt\n", encoding="utf-8")
    assert "unknown dataset format" in _problems(other)
    assert "not a file" in _problems(tmp_path)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=40), min_size=1, max_size=6
    )
)
def test_jsonl_round_trip(tmp_path: Path, data: dict[str, str]) -> None:
    path = tmp_path / "rt.jsonl"
    path.write_text(
        "".join(json.dumps({"id": k, "prompt": v}, ensure_ascii=False) + "\n" for k, v in data.items()),
        encoding="utf-8",
    )
    loaded = load_dataset(path)
    assert [(i.id, i.messages[-1]["content"]) for i in loaded] == list(data.items())


def test_prompt_item_id_follows_the_text() -> None:
    assert prompt_item("a").id == prompt_item("a").id != prompt_item("b").id
    assert prompt_item("a", "sys").messages[0]["role"] == "system"
