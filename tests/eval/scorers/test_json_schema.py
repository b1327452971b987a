"""The json scorer: valid JSON, fenced or embedded, against the item's or the config's schema."""

from __future__ import annotations

from modelfactory.eval.scoring import build_scorer

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_valid_json_anywhere_in_the_reply() -> None:
    plain = build_scorer("json")
    assert plain('{"a": 1}', {}).value == 1.0
    assert plain('Sure:\n```json\n{"a": [1, 2]}\n```', {}).value == 1.0
    assert plain('Here it is: {"a": 1} hope it helps', {}).answer == '{"a": 1}'
    bad = plain("{'a': 1}", {})
    assert bad.value == 0.0 and "no valid JSON" in bad.explanation


def test_schema_from_config_and_from_the_item() -> None:
    scorer = build_scorer({"name": "json", "schema": SCHEMA})
    assert scorer('{"city": "Paris"}', {}).value == 1.0
    wrong = scorer('{"city": 3}', {})
    assert wrong.value == 0.0 and "at city" in wrong.explanation
    item_schema = {"schema": {"type": "array"}}
    assert scorer('{"city": "Paris"}', item_schema).value == 0.0  # the item's schema wins
    assert scorer("[1]", item_schema).value == 1.0
    broken = scorer("[1]", {"id": "q3", "schema": {"type": 5}})
    assert broken.value is None and "q3" in str(broken.error)
