"""Judge functions for ``CallableModel`` judges in tests/eval/scorers/test_model_graded.py: a user's own
grader, deterministic, with token counts so its cost can be priced."""

from __future__ import annotations

from typing import Any

from modelfactory import ChatMessage, TokenUsage

CALLS: list[str] = []  # every prompt a judge was really called with (a cache hit never gets here)


def _prompt(messages: list[dict[str, Any]]) -> str:
    return str(messages[-1]["content"])


def strict(messages: list[dict[str, Any]]) -> ChatMessage:
    """GRADE: C when the reference answer's text appears in the submission, else GRADE: I."""
    prompt = _prompt(messages)
    CALLS.append(prompt)
    reference = prompt.split("[Reference answer]: ")[1].split("\n")[0]
    submission = prompt.split("[Submission]: ")[1].split("\n\nDoes the submission")[0]
    grade = "C" if reference.split(" | ")[0].lower() in submission.lower() else "I"
    return ChatMessage(
        content=f"Compared them.\nGRADE: {grade}", token_usage=TokenUsage(input_tokens=1000, output_tokens=10)
    )


def rambling(messages: list[dict[str, Any]]) -> str:
    return "I cannot decide."


def broken(messages: list[dict[str, Any]]) -> str:
    raise ConnectionError("judge endpoint unreachable")
