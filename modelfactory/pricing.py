"""What a call costs: one price per model, and the arithmetic from a reply's token usage.

A price comes from the model's config (``price: {input: 2.5, output: 10}``, USD per million tokens)
or else from LiteLLM's bundled price map when litellm is installed. Local models (no :class:`ApiSpec`)
have no price: ``None`` means "unknown", never 0, so a summary can say so instead of showing free runs.

The map is read from litellm's bundled JSON file without importing litellm (``import litellm`` costs
seconds and, unless ``LITELLM_LOCAL_MODEL_COST_MAP=True``, fetches the map over the network); a process
that has already imported litellm gets ``litellm.model_cost`` (which includes ``litellm.register_model``).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from .messages import TokenUsage

__all__ = [
    "DEFAULT_BATCH_DISCOUNT",
    "Budget",
    "Price",
    "cost_usd",
    "estimate_cost",
    "litellm_entry",
    "price_for",
    "token_counter",
]

# OpenAI, Azure OpenAI and Anthropic batch endpoints all bill 50% of the online price.
DEFAULT_BATCH_DISCOUNT = 0.5
_PER_MILLION = 1_000_000


class Price(BaseModel):
    """USD per million tokens. ``cached_input`` None: cached input tokens cost ``input``.
    ``batch_discount``: the fraction taken off every rate for batch-API calls (0.5 = half price)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0, description="USD per million input (prompt) tokens")
    output: float = Field(ge=0, description="USD per million output (completion) tokens")
    cached_input: float | None = Field(None, ge=0, description="USD per million cached input tokens")
    cache_write_input: float | None = Field(
        None, ge=0, description="USD per million input tokens written to the prompt cache (null: input rate)"
    )
    batch_discount: float = Field(
        DEFAULT_BATCH_DISCOUNT, ge=0, le=1, description="fraction off for batch-API calls (0.5 = half price)"
    )

    def rates(self, *, batch: bool = False) -> tuple[float, float, float]:
        """(input, cached input, output) in USD per token, at the batch rate when ``batch``."""
        factor = (1.0 - self.batch_discount) if batch else 1.0
        cached = self.input if self.cached_input is None else self.cached_input
        return (
            self.input * factor / _PER_MILLION,
            cached * factor / _PER_MILLION,
            self.output * factor / _PER_MILLION,
        )


def cost_usd(
    usage: TokenUsage | Mapping[str, Any] | None, price: Price | None, *, batch: bool = False
) -> float | None:
    """The cost of one call in USD; ``None`` when either the usage or the price is unknown.

    ``usage.input_tokens`` counts every prompt token (the OpenAI convention); a usage object with a
    ``cached_input_tokens`` attribute (or key: a result row's ``usage``) has those billed at the cached rate,
    its ``cache_write_input_tokens`` at the cache-write rate (Anthropic: 1.25x input). Reasoning tokens
    are part of ``output_tokens`` (every provider bills them as output), so they cost the output rate.
    """
    if usage is None or price is None:
        return None
    if isinstance(usage, Mapping):  # a result row's "usage"
        get = usage.get
    else:

        def get(key: str, default: Any = None) -> Any:
            return getattr(usage, key, default)

    n_in, n_out = int(get("input_tokens", 0) or 0), int(get("output_tokens", 0) or 0)
    cached = min(int(get("cached_input_tokens", 0) or 0), n_in)
    written = min(int(get("cache_write_input_tokens", 0) or 0), n_in - cached)
    inp, cached_rate, out = price.rates(batch=batch)
    write_rate = inp
    if price.cache_write_input is not None:
        factor = (1.0 - price.batch_discount) if batch else 1.0
        write_rate = price.cache_write_input * factor / _PER_MILLION
    return (n_in - cached - written) * inp + cached * cached_rate + written * write_rate + n_out * out


def estimate_cost(
    input_tokens: int, output_tokens: int, price: Price | None, *, batch: bool = False
) -> float | None:
    """The cost of a call before it is made (no cached tokens assumed): budgets and ``estimate``."""
    if price is None:
        return None
    inp, _, out = price.rates(batch=batch)
    return input_tokens * inp + output_tokens * out


# ---------------------------------------------------------------------------- LiteLLM's map


@functools.lru_cache(maxsize=1)
def _bundled_map() -> dict[str, Any]:
    """LiteLLM's bundled price/capability map, read once; {} without litellm."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("litellm")  # finds the package without importing it
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return {}
    for location in spec.submodule_search_locations:
        path = Path(location) / "model_prices_and_context_window_backup.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            return data if isinstance(data, dict) else {}
    # A litellm without the bundled file: import it, offline (see NOTES.md on its network fetch).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except Exception:  # noqa: BLE001 - a broken optional install means "no map", not a crash
        return {}
    return dict(getattr(litellm, "model_cost", {}) or {})


def _model_map() -> dict[str, Any]:
    loaded = sys.modules.get("litellm")
    cost = getattr(loaded, "model_cost", None) if loaded is not None else None
    return cost if isinstance(cost, dict) and cost else _bundled_map()


def _candidates(model_id: str, provider: str | None) -> list[str]:
    """Keys to try in LiteLLM's map, most specific first."""
    keys = []
    if provider:
        keys.append(f"{provider}/{model_id}")
    keys.append(model_id)
    if "/" in model_id:  # "openai/gpt-4o", "anthropic/claude-..." as LiteLLM model names
        keys.append(model_id.split("/", 1)[1])
    return keys


def litellm_entry(model_id: str, provider: str | None = None) -> dict[str, Any] | None:
    """LiteLLM's map entry for ``model_id`` (``provider`` e.g. "azure" tried first), or None."""
    table = _model_map()
    for key in _candidates(model_id, provider):
        entry = table.get(key)
        if isinstance(entry, dict) and key != "sample_spec":
            return entry
    return None


def _price_from_entry(entry: dict[str, Any]) -> Price | None:
    inp = entry.get("input_cost_per_token")
    out = entry.get("output_cost_per_token")
    if not isinstance(inp, (int, float)) or not isinstance(out, (int, float)):
        return None
    cached = entry.get("cache_read_input_token_cost")
    write = entry.get("cache_creation_input_token_cost")
    batch_in = entry.get("input_cost_per_token_batches")
    discount = DEFAULT_BATCH_DISCOUNT
    if isinstance(batch_in, (int, float)) and inp > 0:
        discount = min(max(1.0 - batch_in / inp, 0.0), 1.0)
    return Price(
        input=inp * _PER_MILLION,
        output=out * _PER_MILLION,
        cached_input=cached * _PER_MILLION if isinstance(cached, (int, float)) else None,
        cache_write_input=write * _PER_MILLION if isinstance(write, (int, float)) else None,
        batch_discount=round(discount, 6),
    )


def _provider_of(spec: Any) -> str | None:
    """The LiteLLM provider prefix a backend's bare model ids live under, where it is not OpenAI's."""
    name = type(spec).__name__
    return {"AzureOpenAIServerSpec": "azure", "HfApiSpec": "huggingface"}.get(name)


def price_for(model: Any) -> Price | None:
    """The price of ``model`` (a Model, its spec, or a model id string): the config's ``price`` first,
    then LiteLLM's map; ``None`` for local models and for models nobody priced."""
    if isinstance(model, str):
        entry = litellm_entry(model)
        return _price_from_entry(entry) if entry else None
    spec = getattr(model, "spec", model)
    configured = getattr(spec, "price", None)
    if configured is not None:
        return configured if isinstance(configured, Price) else Price.model_validate(configured)
    if not getattr(spec, "remote_api", False):
        return None  # local weights, a user callable, a fallback chain: no per-token price
    entry = litellm_entry(spec.model_id, _provider_of(spec))
    return _price_from_entry(entry) if entry else None


# ---------------------------------------------------------------------------- tokens before a call

CHARS_PER_TOKEN = 4  # the heuristic when no tokenizer is at hand: ~4 characters per token in English


def _message_text(messages: Any) -> str:
    parts: list[str] = []
    for message in messages or []:
        content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [str(p.get("text", "")) for p in content if isinstance(p, dict)]
    return "\n".join(parts)


def token_counter(model: Any) -> tuple[Callable[[Any], int], str]:
    """A function counting a conversation's prompt tokens for ``model``, and how it counts:
    the model's own tokenizer (local transformers models), tiktoken's encoding for OpenAI model ids,
    else ``chars/4`` (a rough heuristic, said so in every estimate)."""
    spec = getattr(model, "spec", None)
    if spec is not None and not getattr(spec, "remote_api", False) and hasattr(type(model), "tokenizer"):
        try:
            tok = model.tokenizer
        except Exception:  # noqa: BLE001 - no tokenizer (offline, missing weights): fall back below
            tok = None
        if tok is not None:
            return (lambda messages: len(tok(_message_text(messages))["input_ids"])), "model tokenizer"
    model_id = getattr(model, "model_id", None)
    if isinstance(model_id, str):
        try:
            import tiktoken

            enc = tiktoken.encoding_for_model(model_id.rsplit("/", 1)[-1])
        except Exception:  # noqa: BLE001 - not installed, or an id tiktoken does not know
            enc = None
        if enc is not None:
            return (lambda messages: len(enc.encode(_message_text(messages)))), f"tiktoken {enc.name}"
    return (lambda messages: -(-len(_message_text(messages)) // CHARS_PER_TOKEN)), "chars/4 heuristic"


# ---------------------------------------------------------------------------- budgets


class Budget:
    """``runner.max_cost_usd``: admits a call only while spent + in-flight estimates + its own estimate
    stay within the limit; once one is refused, nothing more is admitted (the job stops submitting).

    Thread-safe: the runner admits from its worker threads or event loop and settles from its main loop.
    """

    def __init__(self, limit_usd: float, price: Price, *, batch: bool = False) -> None:
        self.limit_usd = limit_usd
        self.price = price
        self.batch = batch
        self.spent_usd = 0.0
        self.in_flight_usd = 0.0
        self.reason: str | None = None
        self._estimates: dict[str, float] = {}
        self._lock = threading.Lock()

    def admit(self, item_id: str, input_tokens: int, output_tokens: int) -> bool:
        estimate = estimate_cost(input_tokens, output_tokens, self.price, batch=self.batch) or 0.0
        with self._lock:
            if self.reason is not None:
                return False
            if self.spent_usd + self.in_flight_usd + estimate > self.limit_usd:
                self.reason = (
                    f"runner.max_cost_usd={self.limit_usd:g} reached: spent ${self.spent_usd:.6f}, "
                    f"${self.in_flight_usd:.6f} in flight, next item {item_id!r} estimated "
                    f"${estimate:.6f}; raise the budget and run again to resume"
                )
                return False
            self.in_flight_usd += estimate
            self._estimates[item_id] = estimate
            return True

    def settle(self, item_id: str, actual_usd: float | None) -> None:
        """A call finished: its estimate leaves the in-flight sum, its real cost (or estimate) is spent."""
        with self._lock:
            estimate = self._estimates.pop(item_id, 0.0)
            self.in_flight_usd = max(0.0, self.in_flight_usd - estimate)
            self.spent_usd += estimate if actual_usd is None else actual_usd

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_cost_usd": self.limit_usd,
            "spent_usd": round(self.spent_usd, 6),
            "stopped": self.reason is not None,
            "reason": self.reason,
        }


# ---------------------------------------------------------------------------- modelfactory estimate


def estimate_job(model: Any, items: list[Any], max_tokens: int | None) -> dict[str, Any]:
    """A dry-run estimate of a job: items, prompt tokens (and how they were counted), output tokens
    assumed (``max_tokens``, else 256 per item), and cost online vs batch. Sends no request."""
    count, method = token_counter(model)
    tokens_in = sum(count(getattr(it, "messages", it)) for it in items)
    configured = getattr(getattr(model, "spec", None), "max_tokens", None)
    per_item_out, why = (
        (max_tokens, "max_tokens")
        if max_tokens
        else (configured, "model.max_tokens")
        if configured
        else (256, "default")
    )
    tokens_out = per_item_out * len(items)
    price = price_for(model)
    return {
        "items": len(items),
        "input_tokens": tokens_in,
        "token_count": method,
        "output_tokens": tokens_out,
        "output_assumed": f"{per_item_out} per item ({why})",
        "price": None if price is None else price.model_dump(),
        "cost_online_usd": estimate_cost(tokens_in, tokens_out, price),
        "cost_batch_usd": estimate_cost(tokens_in, tokens_out, price, batch=True),
    }
