"""Prices and costs, checked against figures computed by hand from the providers' price pages."""

from __future__ import annotations

from typing import Any

import pytest

import modelfactory
from modelfactory import build_model, run_items
from modelfactory.batch import BatchOptions
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
    usage = TokenUsage(1000, 100, cached_input_tokens=600)
    price = Price(input=2.0, output=8.0, cached_input=0.5)
    # 400 x $2/M + 600 x $0.5/M + 100 x $8/M = 0.0008 + 0.0003 + 0.0008
    assert cost_usd(usage, price) == pytest.approx(0.0019)
    assert cost_usd(usage.to_dict(), price) == pytest.approx(0.0019)  # a result row's usage
    # a batch discount of 0.25 leaves 75% of each rate
    assert cost_usd(usage, price.model_copy(update={"batch_discount": 0.25}), batch=True) == (
        pytest.approx(0.0019 * 0.75)
    )
    # no cached rate given: cached tokens cost the input rate
    assert cost_usd(usage, Price(input=2.0, output=8.0)) == pytest.approx(0.0028)


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
        input=3.0, output=15.0, cached_input=0.3, cache_write_input=3.75, batch_discount=0.5
    )  # Anthropic's cache writes: 1.25x input
    assert price_for(_api("no-such-model-anywhere")) is None


def test_batch_rates_are_the_maps_batch_prices() -> None:
    """The batch discount comes from LiteLLM's batch input price. 456 of the map's 487 batch-priced models
    are at exactly half price, where a discount and its complement agree; the other 31 tell them apart."""
    litellm = pytest.importorskip("litellm")
    # a fine-tuned gpt-4o: $3.75 / M online, $2.225 / M in a batch: 40.7% off, not 59.3%
    price = price_for("ft:gpt-4o-2024-08-06")
    assert price is not None and price.batch_discount == pytest.approx(1 - 2.225 / 3.75, abs=1e-6)
    assert cost_usd(TokenUsage(1_000_000, 0), price, batch=True) == pytest.approx(2.225, rel=1e-5)
    checked = odd = 0
    for model_id, entry in litellm.model_cost.items():
        batch_in, online_in = entry.get("input_cost_per_token_batches"), entry.get("input_cost_per_token")
        if (
            not isinstance(batch_in, (int, float))
            or not isinstance(online_in, (int, float))
            or online_in <= 0
        ):
            continue
        price = price_for(model_id)
        if price is None or price.input != pytest.approx(online_in * 1e6):
            continue  # the id finds another entry first (a provider prefix): not this one's price
        checked += 1
        odd += batch_in != pytest.approx(online_in / 2)
        assert price.rates(batch=True)[0] == pytest.approx(min(batch_in, online_in), rel=1e-5), model_id
    assert checked > 400 and odd > 20  # the map has them: the loop did test discounts other than 50%


# ---------------------------------------------------------------------------- cached input tokens, read from
# the providers' own usage. $2 / $0.50 / $8 per million input / cached input / output tokens:
CACHED_PRICE = {"input": 2.0, "output": 8.0, "cached_input": 0.5}
# 1,000 prompt tokens of which 600 were cached, 100 completion tokens:
# 400 x $2/M + 600 x $0.5/M + 100 x $8/M = $0.0008 + $0.0003 + $0.0008
CACHED_COST = 0.0019
OPENAI_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 100,
    "total_tokens": 1100,
    "prompt_tokens_details": {"cached_tokens": 600},
}
ITEM = [{"id": "a", "prompt": "hi"}]


@pytest.mark.server
def test_openai_cached_tokens_are_read_and_priced(recording_server: Any) -> None:
    recording_server.usage = dict(OPENAI_USAGE)
    model = _api("test-model", api_base=f"{recording_server.url}/v1", price=CACHED_PRICE)
    stats = run_items(model, ITEM, progress=False)
    (row,) = stats.rows
    assert row["usage"] == {
        "input_tokens": 1000,
        "output_tokens": 100,
        "total_tokens": 1100,
        "cached_input_tokens": 600,
    }
    assert row["cost_usd"] == pytest.approx(CACHED_COST)
    *_, last = model.generate_stream([{"role": "user", "content": "hi"}])  # the stream's usage chunk too
    assert last.token_usage is not None and last.token_usage.cached_input_tokens == 600


@pytest.mark.server
def test_litellm_usage_carries_cached_tokens(recording_server: Any) -> None:
    """LiteLLM's own usage object: prompt_tokens_details.cached_tokens from an OpenAI-compatible server,
    and Anthropic's cache_read_input_tokens, which litellm adds to prompt_tokens."""
    pytest.importorskip("litellm")
    recording_server.usage = dict(OPENAI_USAGE)
    openai_like = build_model(
        {
            "_target_": "modelfactory.LiteLLMModel",
            "model_id": "openai/test-model",
            "api_base": f"{recording_server.url}/v1",
            "api_key": "sk-test",
            "price": CACHED_PRICE,
        }
    )
    (row,) = run_items(openai_like, ITEM, progress=False).rows
    assert (row["usage"]["input_tokens"], row["usage"]["cached_input_tokens"]) == (1000, 600)
    assert row["cost_usd"] == pytest.approx(CACHED_COST)

    recording_server.enqueue(
        body={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [{"type": "text", "text": "hello"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            # Anthropic counts the cache apart: 400 uncached + 600 read = the same 1,000 prompt tokens
            "usage": {
                "input_tokens": 400,
                "cache_read_input_tokens": 600,
                "cache_creation_input_tokens": 0,
                "output_tokens": 100,
            },
        }
    )
    claude = build_model(
        {
            "_target_": "modelfactory.LiteLLMModel",
            "model_id": "anthropic/claude-test",
            "api_base": recording_server.url,
            "api_key": "sk-test",
            "price": CACHED_PRICE,
        }
    )
    (row,) = run_items(claude, ITEM, progress=False).rows
    assert (row["usage"]["input_tokens"], row["usage"]["cached_input_tokens"]) == (1000, 600), row
    assert row["cost_usd"] == pytest.approx(CACHED_COST)


@pytest.mark.server
def test_batch_replies_carry_cached_tokens_at_the_batch_rate(tmp_path: Any) -> None:
    from tests.servers.anthropic_batches import AnthropicBatchServer
    from tests.servers.openai_batches import BatchAPIServer

    item = [{"id": "q1", "prompt": "question 1 | tail"}]  # 4 words: 4 prompt tokens at the fakes
    with BatchAPIServer(api_key="sk-test") as server:
        server.cached_tokens = 3
        model = _api("test-model", api_base=f"{server.url}/v1", price=CACHED_PRICE)
        (row,) = run_items(model, item, provider_batch=BatchOptions(poll_s=0.05), progress=False).rows
    # "echo: question 1 | tail": 5 completion tokens; 4 prompt tokens, 3 of them cached; half price:
    # (1 x $2 + 3 x $0.5 + 5 x $8) / 1M x 0.5 = $43.5 / 1M x 0.5
    assert (row["usage"]["input_tokens"], row["usage"]["cached_input_tokens"]) == (4, 3)
    assert row["cost_usd"] == pytest.approx(43.5e-6 * 0.5)

    with AnthropicBatchServer() as anthropic:
        anthropic.cache_read, anthropic.cache_write = 600, 100
        claude = build_model(
            {
                "_target_": "modelfactory.LiteLLMModel",
                "model_id": "anthropic/claude-test",
                "api_base": anthropic.url,
                "api_key": anthropic.api_key,
                "price": CACHED_PRICE,
            }
        )
        (row,) = run_items(claude, item, provider_batch=BatchOptions(poll_s=0.05), progress=False).rows
    # 4 uncached + 600 read + 100 written = 704 prompt tokens, 600 cached (writes at the input rate);
    # "echo: question 1 | tail" has 5 words: (104 x $2 + 600 x $0.5 + 5 x $8) / 1M x 0.5 = $548 / 1M x 0.5
    assert (row["usage"]["input_tokens"], row["usage"]["cached_input_tokens"]) == (704, 600)
    assert row["cost_usd"] == pytest.approx(548e-6 * 0.5)
