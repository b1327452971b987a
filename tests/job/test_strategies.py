"""The strategy a run uses is chosen from what the model declares (modelfactory/job/strategies.py)."""

from __future__ import annotations

from typing import Any

import pytest

from modelfactory import CallableModel
from modelfactory.batch import BatchOptions
from modelfactory.job.strategies import choose


class Batching:
    def __call__(self, messages: Any, **kw: Any) -> str:
        return "x"

    def generate_batch(self, conversations: list[Any], **kw: Any) -> list[str]:
        return ["x" for _ in conversations]


def echo(messages: Any) -> str:
    return "x"


@pytest.mark.parametrize(
    ("model", "provider_batch", "concurrency", "pending", "expected"),
    [
        (CallableModel(fn=echo), None, 8, 3, ("threads", 3)),  # never more workers than items
        (CallableModel(fn=echo), None, 1, 3, ("sequential", 1)),
        (Batching(), None, 8, 20, ("batches", 1)),
        (CallableModel(fn=echo), BatchOptions(), 4, 20, ("provider_batch", 4)),
        (Batching(), BatchOptions(), 4, 0, ("provider_batch", 1)),  # asked for wins over declared
    ],
)
def test_the_strategy_follows_the_model_and_the_job(
    model: Any, provider_batch: Any, concurrency: int, pending: int, expected: tuple[str, int]
) -> None:
    assert choose(model, provider_batch, concurrency, pending) == expected
