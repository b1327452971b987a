"""Which request parameters a model takes: the maintained map behind ``supports_stop`` and
``supports_temperature`` (DESIGN.md, the call contract).

Some models reject parameters every other chat model takes: OpenAI's reasoning models (o1, o3, o4-mini,
gpt-5) answer ``stop`` and ``temperature`` with a 400. A spec whose ``supports_stop`` /
``supports_temperature`` is left unset (None) gets its value here, from the model id; a config sets
either to true or false to override. Where ``stop`` is not sent, :class:`~modelfactory.model.Model`
trims the reply at the first stop afterwards, so the contract holds either way; an unsupported
``temperature`` is dropped from the request.

The map is a table of model families, matched on the id's last path part (``openai/o3-mini`` ->
``o3-mini``): a family matches itself and ids that continue it with ``-`` or ``.`` (``gpt-5`` matches
``gpt-5-mini``, ``gpt-5.1``; not ``gpt-50``). The first matching row wins, so exceptions go first.
LiteLLM's bundled map adds ``supports_sampling_params: false`` (no temperature) when litellm is installed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

__all__ = ["FAMILIES", "RequestCapabilities", "request_capabilities", "spec_capabilities"]

# (family, takes `stop`, takes `temperature`, why) -- checked against the providers' API references.
FAMILIES: tuple[tuple[str, bool, bool, str], ...] = (
    ("gpt-5-chat", True, True, "gpt-5-chat is the non-reasoning ChatGPT model"),
    ("gpt-5", False, False, "OpenAI reasoning model (gpt-5 family)"),
    ("o1", False, False, "OpenAI reasoning model (o-series)"),
    ("o3", False, False, "OpenAI reasoning model (o-series)"),
    ("o4", False, False, "OpenAI reasoning model (o-series)"),
)


@dataclass(frozen=True)
class RequestCapabilities:
    stop: bool  # send `stop` to the provider (else: trim client-side)
    temperature: bool  # send `temperature` (else: dropped)
    source: str  # where the answer came from: "config", the map's reason, or "default"

    def notes(self) -> list[str]:
        """What ``modelfactory check`` says about a model that changes its requests."""
        out = []
        if not self.stop:
            out.append("`stop` is not sent; replies are trimmed at the stop sequence client-side")
        if not self.temperature:
            out.append("`temperature` is not sent (the model rejects it)")
        return [f"{n} ({self.source})" for n in out]


def _base(model_id: str) -> str:
    return model_id.strip().lower().rsplit("/", 1)[-1]


def _family(model_id: str) -> tuple[bool, bool, str] | None:
    base = _base(model_id)
    for family, stop, temperature, why in FAMILIES:
        if base == family or base.startswith((family + "-", family + ".")):
            return stop, temperature, f"capability map: {why}"
    return None


def _litellm_sampling(model_id: str) -> bool | None:
    from .pricing import litellm_entry

    entry = litellm_entry(model_id)
    value = entry.get("supports_sampling_params") if entry else None
    return value if isinstance(value, bool) else None


@functools.lru_cache(maxsize=256)
def request_capabilities(
    model_id: str,
    supports_stop: bool | None = None,
    supports_temperature: bool | None = None,
    *,
    provider_map: bool = True,
) -> RequestCapabilities:
    """The parameters a request to ``model_id`` may carry; explicit settings (from the config) win.
    ``provider_map``: also consult LiteLLM's map (API models; a local model's id means nothing there)."""
    family = _family(model_id)
    stop, temperature, source = family if family is not None else (True, True, "default")
    if family is None and provider_map and _litellm_sampling(model_id) is False:
        temperature, source = False, "LiteLLM's map: supports_sampling_params false"
    if supports_stop is not None or supports_temperature is not None:
        source = "config" if source == "default" else f"config over {source}"
    return RequestCapabilities(
        stop=stop if supports_stop is None else supports_stop,
        temperature=temperature if supports_temperature is None else supports_temperature,
        source=source,
    )


def spec_capabilities(spec: Any) -> RequestCapabilities:
    """:func:`request_capabilities` for a model spec (its ``model_id`` and ``supports_*`` fields)."""
    from .settings import ApiSpec

    return request_capabilities(
        str(getattr(spec, "model_id", "")),
        getattr(spec, "supports_stop", None),
        getattr(spec, "supports_temperature", None),
        provider_map=isinstance(spec, ApiSpec),
    )
