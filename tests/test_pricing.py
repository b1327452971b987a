"""Prices and costs, checked against figures computed by hand from the providers' price pages."""

from __future__ import annotations

import pytest

import modelfactory
from modelfactory import build_model
from modelfactory.errors import ConfigError
from modelfactory.messages import TokenUsage
from modelfactory.pricing import Price, cost_usd, estimate_cost, price_for

OPENAI = "modelfactory.OpenAIServerModel"


def _api(model_id: str, **extra: object) -> modelfactory.Model:
    return build_model({"_target_": OPENAI, "model_id": model_id, "api_key": "sk-test", **extra})


def test_cost_by_hand() -> None:
    price = Price(input=2.5, output=10.0)
    # 1,000 in x $2.50/M + 500 out x $10/M = $0.0025 + $0.005
    assert cost_usd(TokenUsage(1000, 500), price) == pytest.approx(0.0075)
    # the batch rate is half of it by default
    assert cost_usd(TokenUsage(1000, 500), price, batch=True) == pytest.approx(0.00375)
    assert cost_usd(TokenUsage(0, 0), price) == 0.0


def test_cached_input_tokens_billed_at_the_cached_rate() -> None:
    class Usage(TokenUsage):
        cached_input_tokens = 600

    price = Price(input=2.0, output=8.0, cached_input=0.5)
    # 400 x $2/M + 600 x $0.5/M + 100 x $8/M = 0.0008 + 0.0003 + 0.0008
    assert cost_usd(Usage(1000, 100), price) == pytest.approx(0.0019)
    # a batch discount of 0.25 leaves 75% of each rate
    assert cost_usd(Usage(1000, 100), price.model_copy(update={"batch_discount": 0.25}), batch=True) == (
        pytest.approx(0.0019 * 0.75)
    )


def test_unknown_is_none_not_zero() -> None:
    assert cost_usd(TokenUsage(10, 10), None) is None
    assert cost_usd(None, Price(input=1, output=1)) is None
    assert estimate_cost(100, 100, None) is None
    assert estimate_cost(1_000_000, 1_000_000, Price(input=1, output=3)) == pytest.approx(4.0)


def test_price_validation() -> None:
    with pytest.raises(ValueError):
        Price(input=-1, output=1)
    with pytest.raises(ValueError):
        Price(input=1, output=1, batch_discount=1.5)
    with pytest.raises(ValueError):
        Price.model_validate({"input": 1, "ouput": 1})  # a typo is an error, not a free output
    price = Price(input=1, output=1)
    with pytest.raises(ValueError, match="frozen"):
        price.input = 2  # type: ignore[misc]


def test_config_price_overrides_the_map() -> None:
    model = _api("gpt-4o", price={"input": 1, "output": 2, "batch_discount": 0})
    price = price_for(model)
    assert price == Price(input=1, output=2, batch_discount=0)
    assert cost_usd(TokenUsage(1_000_000, 1_000_000), price, batch=True) == pytest.approx(3.0)


def test_bad_config_price_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="price"):
        _api("gpt-4o", price={"input": "cheap", "output": 1})


def test_local_models_have_no_price() -> None:
    fn = build_model({"_target_": "modelfactory.CallableModel", "fn": "examples.custom_model.custom_model"})
    assert price_for(fn) is None


def test_price_not_part_of_the_cache_identity() -> None:
    from modelfactory.cache import model_identity

    a = _api("gpt-4o", price={"input": 1, "output": 2})
    b = _api("gpt-4o", price={"input": 3, "output": 4})
    assert model_identity(a) == model_identity(b)


def test_litellm_map_prices_when_installed() -> None:
    pytest.importorskip("litellm")
    # gpt-4o: $2.50 in / $10 out per million, cached $1.25, batch half price (OpenAI's price page)
    assert price_for(_api("gpt-4o")) == Price(input=2.5, output=10.0, cached_input=1.25, batch_discount=0.5)
    assert price_for("anthropic/claude-sonnet-4-5") == Price(
        input=3.0, output=15.0, cached_input=0.3, batch_discount=0.5
    )
    assert price_for(_api("no-such-model-anywhere")) is None
