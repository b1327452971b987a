"""The string scorers: exact, includes, pattern, numeric, choice."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelfactory.eval.scoring import build_scorer
from modelfactory.messages import TokenLogprob

words = st.text(alphabet="abcdefghij ", min_size=0, max_size=30)


def value(spec: object, reply: str, target: object) -> float | None:
    return build_scorer(spec)(reply, {"id": "q", "target": target}).value  # type: ignore[arg-type]


def test_exact_normalises_as_configured() -> None:
    assert value("exact", "  Paris \n", "paris") == 1.0
    assert value({"name": "exact", "ignore_case": False}, "Paris", "paris") == 0.0
    assert value({"name": "exact", "ignore_punctuation": True}, "Paris.", "Paris") == 1.0
    assert value({"name": "exact", "regexes_to_ignore": [r"^the answer is "]}, "the answer is 4", "4") == 1.0
    assert value("exact", "Lyon", ["Paris", "Lyon"]) == 1.0


@given(words, words)
def test_includes_finds_a_target_among_other_words(before: str, after: str) -> None:
    assert value("includes", f"{before} Canberra {after}", "Canberra") == 1.0
    assert value("includes", f"{before}Canberras{after}", "Canberra") == 0.0  # not as a word


def test_includes_word_boundary_option() -> None:
    assert value("includes", "Romeo", "Rome") == 0.0
    assert value({"name": "includes", "word_boundary": False}, "Romeo", "Rome") == 1.0
    assert value("includes", "Washington, D.C. is", ["Washington, D.C."]) == 1.0


def test_pattern_extracts_the_capture_group() -> None:
    spec = {"name": "pattern", "pattern": r"answer:\s*(\w+)"}
    score = build_scorer(spec)("Thinking... ANSWER: Paris. Really.", {"target": "paris"})
    assert (score.value, score.answer) == (1.0, "paris")
    assert (
        value({**spec, "ignore_case": False}, "ANSWER: Paris", "Paris") == 0.0
    )  # the regex is case-sensitive too
    assert value({**spec, "match": "last"}, "answer: a then answer: b", "b") == 1.0
    assert value(spec, "no answer here", "x") == 0.0


@given(st.floats(-1e9, 1e9, allow_nan=False).map(lambda x: round(x, 4)), words)
def test_numeric_takes_the_last_number(x: float, text: str) -> None:
    reply = f"first 7 then {text} so the answer is {x}"
    score = build_scorer("numeric")(reply, {"target": repr(x)})
    assert score.value == 1.0, score


def test_numeric_tolerance_and_separators() -> None:
    assert value("numeric", "total: 1,234.5 dollars", "1234.5") == 1.0
    assert value("numeric", "3.14159", "3.14") == 0.0
    assert value({"name": "numeric", "abs_tol": 0.01}, "3.14159", "3.14") == 1.0
    assert value({"name": "numeric", "rel_tol": 0.01}, "101", "100") == 1.0
    assert value("numeric", "no digits", "3") == 0.0
    bad = build_scorer("numeric")("3", {"id": "q7", "target": "three"})
    assert bad.value is None and "q7" in str(bad.error)


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("B", "B"),
        ("(C) Paris", "C"),
        ("The answer is D.", "D"),
        ("Answer: (A)", "A"),
        ("I think B) is right", "B"),
        ("A lot of thought... the answer is C", "C"),  # "A" the article is not the answer
        ("none", None),
    ],
)
def test_choice_reads_the_letter(reply: str, answer: str | None) -> None:
    score = build_scorer({"name": "choice", "letters": "ABCD"})(reply, {"target": "C"})
    assert score.answer == answer
    assert score.value == (1.0 if answer == "C" else 0.0)


def _first(*top: tuple[str, float]) -> list[TokenLogprob]:
    """A reply's logprobs whose first token is the most likely of ``top``."""
    return [TokenLogprob(top[0][0], top[0][1], list(top)), TokenLogprob(" rest", -0.1, [])]


def test_choice_reads_the_first_tokens_logprobs_when_asked() -> None:
    """``use_logprobs``: the most likely option letter among the first token's alternatives, " B" and
    "B" adding up; the text decides where the reply has no logprobs or they name no letter, and the
    explanation says which was read; without ``use_logprobs`` the logprobs change nothing."""
    scorer = build_scorer({"name": "choice", "letters": "ABCD", "use_logprobs": True})
    item = {"id": "q", "target": "B"}
    logprobs = _first(("The", -0.9), ("A", -1.2), (" B", -1.6), ("B", -1.7), ("(C", -3.0))
    got = scorer("The answer is A", item, logprobs)
    assert (got.answer, got.value) == ("B", 1.0)  # 0.20 + 0.18 for B over 0.30 for A
    assert "first token's logprobs" in got.explanation
    assert got.metadata["letter_probs"]["B"] == pytest.approx(math.exp(-1.6) + math.exp(-1.7), abs=1e-5)
    assert set(got.metadata["letter_probs"]) == {"A", "B", "C"}
    as_row = scorer("The answer is A", item, [t.to_dict() for t in logprobs])  # a results row's form
    assert (as_row.answer, as_row.metadata) == (got.answer, got.metadata)
    text = scorer("The answer is A", item, _first(("The", -0.1), ("It", -2.0)))
    assert text.answer == "A" and "no option letter among the first token's top_logprobs" in text.explanation
    none = scorer("The answer is A", item, None)
    assert none.answer == "A" and "has no logprobs" in none.explanation
    plain = build_scorer({"name": "choice", "letters": "ABCD"})("The answer is A", item, logprobs)
    assert plain.answer == "A" and "logprobs" not in plain.explanation and not plain.metadata
