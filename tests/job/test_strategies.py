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


class SeedBatching:
    """A ``generate_batch`` that records its calls; ``seeds`` (one per row) only when ``per_row``."""

    def __init__(self, per_row: bool) -> None:
        self.batch_seeds_per_row = per_row
        self.calls: list[tuple[int, dict[str, Any]]] = []

    def __call__(self, messages: Any, **kw: Any) -> str:
        return f"one seed={kw.get('seed')}"

    def generate_batch(
        self, conversations: list[Any], seeds: list[int | None] | None = None, **kw: Any
    ) -> list[str]:
        self.calls.append((len(conversations), {**kw, **({"seeds": seeds} if seeds is not None else {})}))
        if seeds is not None:
            return [f"seed={s}" for s in seeds]
        return [f"seed={kw.get('seed')}" for _ in conversations]


@pytest.mark.parametrize("per_row", [True, False])
def test_items_own_seeds_reach_a_batch_per_row_or_grouped(per_row: bool) -> None:
    """Epoch items (each its own ``seed``): one call with ``seeds`` for a model that seeds each row, else
    one call per seed; every item answered with its own seed, the job's other kwargs kept."""
    from modelfactory.job.items import Item
    from modelfactory.job.strategies import rows

    items = [Item(f"q{i}#{e}", [{"role": "user", "content": str(i)}], generation={"seed": 100 + e})
             for i in range(3) for e in range(2)]  # fmt: skip
    model = SeedBatching(per_row)
    out = {r["id"]: r["content"] for r in rows("batches", model, items, {"seed": 1, "max_tokens": 5},
                                               workers=1, local_batch_size=6)}  # fmt: skip
    assert out == {it.id: f"seed={it.generation['seed']}" for it in items}
    if per_row:
        assert model.calls == [(6, {"max_tokens": 5, "seeds": [100, 101] * 3})]
    else:
        assert model.calls == [(3, {"seed": 100, "max_tokens": 5}), (3, {"seed": 101, "max_tokens": 5})]
