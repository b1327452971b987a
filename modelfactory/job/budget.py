"""A job's spending: the budget (``runner.max_cost_usd``) that admits items before they are sent, and
what each row cost (the record's ``cost_usd``). The prices and the :class:`~modelfactory.pricing.Budget`
ledger are :mod:`modelfactory.pricing`'s; this module is what the runner does with them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import ConfigError, Problem
from ..pricing import Budget, Price, cost_usd, token_counter
from .items import Item

__all__ = ["DEFAULT_OUTPUT_ESTIMATE", "admitted", "job_budget", "row_cost"]

log = logging.getLogger("modelfactory.runner")


def row_cost(row: dict[str, Any], price: Price | None) -> float | None:
    """What the row's call cost: None for an error or an unpriced model (unknown, never a made-up 0),
    0 for a reply served from the response cache (nothing was billed), else its usage at the price
    (the batch rate for a batch row)."""
    if row["error"] or price is None:
        return None
    if row.get("cached"):
        return 0.0
    return cost_usd(row["usage"], price, batch=bool(row.get("batch")))


# Output tokens assumed for a call whose max_tokens is not set, when a budget needs an estimate.
DEFAULT_OUTPUT_ESTIMATE = 256


def job_budget(
    model: Any, price: Price | None, limit: float | None, generation: dict[str, Any], *, batch: bool = False
) -> Budget | None:
    if limit is None:
        return None
    if limit < 0:
        raise ConfigError([Problem("runner.max_cost_usd", f"must be >= 0, got {limit}")])
    if price is None:
        raise ConfigError(
            [
                Problem(
                    "runner.max_cost_usd",
                    f"a budget needs a price, and {getattr(model, 'model_id', model)!r} has none",
                    "give the model a price (model.price={input: 2.5, output: 10}, USD per million tokens) "
                    "or drop runner.max_cost_usd",
                )
            ]
        )
    return Budget(limit, price, batch=batch)  # batch items are estimated at the batch rate


def admitted(budget: Budget, model: Any, todo: Iterable[Item], generation: dict[str, Any]) -> Iterator[Item]:
    """The items the budget admits, in order, estimated as they are taken; stops at the first refusal.
    An item the response cache answers costs nothing: it is let through without an estimate."""
    count, _ = token_counter(model)
    spec = getattr(model, "spec", None)
    out = generation.get("max_tokens") or getattr(spec, "max_tokens", None) or DEFAULT_OUTPUT_ESTIMATE
    cached = _cache_probe(model, generation)
    for item in todo:
        if cached(item):
            yield item
            continue
        if not budget.admit(item.id, count(item.messages), int(out)):
            log.warning("%s", budget.reason)
            return
        yield item


def _cache_probe(model: Any, generation: dict[str, Any]) -> Callable[[Item], bool]:
    """Whether the response cache holds an item's reply (for a budget: a hit is free). Always False for a
    model without a cache on; a lookup that fails counts as a miss (the call itself reports it)."""
    from ..model import Model

    cache = getattr(getattr(model, "spec", None), "cache", None)
    if not isinstance(model, Model) or not getattr(cache, "enabled", False):
        return lambda item: False
    from .items import request_for  # the request an online call of the item sends

    def probe(item: Item) -> bool:
        try:
            return model._cache_lookup(request_for(model, item, generation)) is not None
        except Exception:  # noqa: BLE001 - a replay miss, a bad item: not a hit
            return False

    return probe
