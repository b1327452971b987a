"""The scorer registry and configs: bad configs are ConfigErrors naming the key; errors are unscored."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelfactory.errors import ConfigError
from modelfactory.eval.score import Score
from modelfactory.eval.scoring import build_scorer, build_scorers, check_targets, registered, score_row

FAMILIES = ["choice", "code", "exact", "includes", "json", "model_graded", "numeric", "pattern"]


def test_every_family_is_registered() -> None:
    assert registered() == FAMILIES


@pytest.mark.parametrize(
    ("spec", "key", "words"),
    [
        ({"name": "pattern", "pattern": "Answer: (\\w+"}, "scorer.pattern", "does not compile"),
        ({"name": "includs"}, "scorer.name", "did you mean 'includes'"),
        ({"name": "exact", "ignore_cas": True}, "scorer.ignore_cas", "Extra inputs"),
        ({"name": "numeric", "abs_tol": -1}, "scorer.abs_tol", "greater than or equal to 0"),
        ({"name": "exact", "regexes_to_ignore": ["[a-"]}, "scorer.regexes_to_ignore", "does not compile"),
        ({"name": "json", "schema": {"type": "nonsense"}}, "scorer.schema", "not a valid JSON Schema"),
        ({"name": "model_graded", "template": "{question} {oops}"}, "scorer.template", "oops"),
        ({"name": "model_graded", "grade_pattern": "GRADE: [CI]"}, "scorer.grade_pattern", "capture group"),
        ({"name": "model_graded"}, "scorer.judge", "needs a judge model"),
        ({"name": "code", "timeout_s": 0}, "scorer.timeout_s", "greater than 0"),
        ({}, "scorer.name", "missing the scorer's name"),
        (42, "scorer", "must be a scorer name or a mapping"),
    ],
)
def test_bad_configs_name_the_key(spec: object, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_scorer(spec)  # type: ignore[arg-type]
    assert [p.key for p in info.value.problems] == [key]
    assert words in str(info.value)


def test_every_problem_of_a_task_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        build_scorers([{"name": "pattern", "pattern": "("}, "nope", "exact", "exact"], key="task.scorers")
    keys = [p.key for p in info.value.problems]
    assert keys == [
        "task.scorers[0].pattern",
        "task.scorers[1].name",
        "task.scorers",
    ]  # the last: duplicate labels
    labelled = build_scorers(["exact", {"name": "exact", "label": "exact_cs", "ignore_case": False}])
    assert [s.label for s in labelled] == ["exact", "exact_cs"]


def test_a_task_without_targets_and_an_item_without_one() -> None:
    scorers = build_scorers(["includes", "json"])
    with pytest.raises(ConfigError, match="task without targets"):
        check_targets([{"id": "a"}, {"id": "b"}], scorers)
    with pytest.raises(ConfigError) as info:
        check_targets([{"id": "a", "target": "x"}, {"id": "b"}, {"id": "c", "target": []}], scorers)
    assert "'b', 'c'" in info.value.problems[0].key and "includes" in info.value.problems[0].problem
    check_targets([{"id": "a"}], build_scorers(["json"]))  # json needs no target


def test_a_failed_call_or_a_missing_target_is_unscored_not_wrong() -> None:
    exact = build_scorer("exact")
    assert exact(None, {"id": "a", "target": "x"}) == Score.failed(
        "no reply (the model call failed): unscored"
    )
    missing = exact("x", {"id": "a"})
    assert missing.value is None and missing.error == "item 'a' has no target" and not missing.scored


def test_score_row_is_what_a_results_row_gains() -> None:
    scorers = build_scorers(["exact", "includes"])
    row = score_row(scorers, {"id": "q", "target": ["Paris"]}, "It is Paris.")
    assert row == {
        "scores": {
            "exact": {
                "value": 0.0,
                "answer": "it is paris.",
                "explanation": row["scores"]["exact"]["explanation"],
                "error": None,
            },
            "includes": {
                "value": 1.0,
                "answer": "Paris",
                "explanation": "reply contains 'Paris'",
                "error": None,
            },
        }
    }


_json = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(
    value=st.none() | st.floats(allow_nan=False),
    answer=st.none() | st.text(max_size=20),
    explanation=st.text(max_size=20),
    error=st.none() | st.text(max_size=20),
    metadata=st.dictionaries(st.text(max_size=8), _json, max_size=3),
)
def test_to_dict_is_every_field_and_a_copy(
    value: float | None, answer: str | None, explanation: str, error: str | None, metadata: dict[str, Any]
) -> None:
    score = Score(value, answer=answer, explanation=explanation, error=error, metadata=metadata)
    out = score.to_dict()
    expected = dataclasses.asdict(score)  # what a row held before to_dict was written out by hand
    if not metadata:
        del expected["metadata"]
    assert out == expected
    assert {f.name for f in dataclasses.fields(Score)} - set(out) <= ({"metadata"} if not metadata else set())
    json.dumps(out)  # a results row is JSON
    if metadata:
        before = copy.deepcopy(metadata)
        out["metadata"].clear()
        assert score.metadata == before  # the row owns its copy
