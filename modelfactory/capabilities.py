"""Which request parameters a model takes: the maintained map behind ``supports_stop`` and
``supports_temperature`` (DESIGN.md, the call contract).

Some models reject parameters every other chat model takes. OpenAI's reasoning models (o1, o3, o4-mini,
gpt-5) answer ``stop``, ``temperature`` and the other sampling parameters with a 400 (OpenAI's reasoning
guide; LiteLLM's ``OpenAIOSeriesConfig`` / ``OpenAIGPT5Config`` drop the same ones: ``top_p``,
``presence_penalty``, ``frequency_penalty``, ``logprobs``, ``top_logprobs``, and for gpt-5
``logit_bias``), and take ``max_completion_tokens`` instead of ``max_tokens``. A spec whose
``supports_stop`` / ``supports_temperature`` is left unset (None) gets its value here, from the model
id; a config sets either to true or false to override (``supports_temperature`` speaks for the whole
group of sampling parameters, as LiteLLM's ``supports_sampling_params`` does). Where ``stop`` is not
sent, :class:`~modelfactory.model.Model` trims the reply at the first stop afterwards, so the contract
holds either way; unsupported sampling parameters are dropped from the request, ``max_tokens`` renamed.

The map is a table of model families, matched on the id's last path part (``openai/o3-mini`` ->
``o3-mini``): a family matches itself and ids that continue it with ``-`` or ``.`` (``gpt-5`` matches
``gpt-5-mini``, ``gpt-5.1``; not ``gpt-50``). The first matching row wins, so exceptions go first.
LiteLLM's bundled map adds ``supports_sampling_params: false`` (no sampling parameters) when litellm is
installed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FAMILIES",
    "SAMPLING_PARAMS",
    "RequestCapabilities",
    "request_capabilities",
    "spec_capabilities",
    "supports_stop_parameter",
]

# What OpenAI's reasoning models refuse (o-series: LiteLLM's OpenAIOSeriesConfig list plus temperature,
# which they take only at its default of 1).
_O_SERIES = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs")
_GPT_5 = (*_O_SERIES, "logit_bias")  # LiteLLM's OpenAIGPT5Config drops logit_bias too
# The group a model without sampling parameters (supports_temperature: false) is never sent.
SAMPLING_PARAMS: tuple[str, ...] = (*_GPT_5, "top_k")
# LiteLLM's supports_sampling_params: false (Claude Opus 4.7+): the API refuses these (AnthropicModelInfo).
_MAP_NO_SAMPLING = ("temperature", "top_p", "top_k")
_MAX_COMPLETION = (("max_tokens", "max_completion_tokens"),)
# gpt-5.x that keep their sampling parameters with reasoning_effort: none (OpenAI's gpt-5.1 guide)
_SAMPLING_WITHOUT_REASONING = ("gpt-5.1", "gpt-5.2", "gpt-5.3", "gpt-5.4", "gpt-5.5")

# (family, takes `stop`, sampling parameters it rejects, renamed parameters, why) -- checked against
# the providers' API references and LiteLLM's per-family configs.
# A family ending in "*" matches every id that starts with it (no separator needed). The `stop` column
# covers every id smolagents' `supports_stop_parameter` excludes (tests/test_capabilities.py compares
# them on a list of ids): never sending `stop` is always safe, the reply is trimmed afterwards.
FAMILIES: tuple[tuple[str, bool, tuple[str, ...], tuple[tuple[str, str], ...], str], ...] = (
    ("gpt-5-chat", False, (), (), "gpt-5-chat is the non-reasoning ChatGPT model; `stop` as smolagents"),
    ("gpt-5", False, _GPT_5, _MAX_COMPLETION, "OpenAI reasoning model (gpt-5 family)"),
    ("gpt-5*", False, (), (), "smolagents sends no `stop` to any gpt-5* id"),
    ("o1", False, _O_SERIES, _MAX_COMPLETION, "OpenAI reasoning model (o-series)"),
    ("o3", False, _O_SERIES, _MAX_COMPLETION, "OpenAI reasoning model (o-series)"),
    ("o4", False, _O_SERIES, _MAX_COMPLETION, "OpenAI reasoning model (o-series)"),
    ("grok", False, (), (), "xAI Grok: the reasoning models reject `stop` (smolagents drops it for all)"),
)


@dataclass(frozen=True)
class RequestCapabilities:
    stop: bool  # send `stop` to the provider (else: trim client-side)
    temperature: bool  # send `temperature` and the other sampling parameters (else: `dropped`)
    source: str  # where the answer came from: "config", the map's reason, or "default"
    dropped: tuple[str, ...] = ()  # parameters never sent (the model rejects them)
    renamed: tuple[tuple[str, str], ...] = ()  # (ours, the provider's): max_tokens -> max_completion_tokens

    def notes(self) -> list[str]:
        """What ``modelfactory check`` says about a model that changes its requests."""
        out = []
        if not self.stop:
            out.append("`stop` is not sent; replies are trimmed at the stop sequence client-side")
        if self.dropped:
            names = ", ".join(f"`{p}`" for p in self.dropped)
            out.append(f"sampling parameters are not sent (the model rejects them): {names}")
        out += [f"`{a}` is sent as `{b}`" for a, b in self.renamed]
        return [f"{n} ({self.source})" for n in out]

    def apply(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` as the provider takes them: rejected ones dropped, renamed ones renamed (a value
        given under the provider's own name wins)."""
        out = {k: v for k, v in params.items() if k not in self.dropped}
        for ours, theirs in self.renamed:
            if ours in out:
                value = out.pop(ours)
                out.setdefault(theirs, value)
        return out


# A vendor prefix in front of the model's own name, as OCI writes xAI's models: `oci/xai.grok-4`.
_VENDOR_PREFIX = re.compile(r"^[a-z][a-z0-9_-]*\.(?=grok-)")


def _base(model_id: str) -> str:
    return _VENDOR_PREFIX.sub("", model_id.strip().lower().rsplit("/", 1)[-1])


def _family(model_id: str) -> tuple[bool, tuple[str, ...], tuple[tuple[str, str], ...], str] | None:
    base = _base(model_id)
    for family, stop, dropped, renamed, why in FAMILIES:
        if family.endswith("*"):
            hit = base.startswith(family[:-1])
        else:
            hit = base == family or base.startswith((family + "-", family + "."))
        if hit:
            return stop, dropped, renamed, f"capability map: {why}"
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
    reasoning_effort: str | None = None,
) -> RequestCapabilities:
    """The parameters a request to ``model_id`` may carry; explicit settings (from the config) win.
    ``provider_map``: also consult LiteLLM's map (API models; a local model's id means nothing there)."""
    family = _family(model_id)
    stop, dropped, renamed, source = family if family is not None else (True, (), (), "default")
    if not provider_map:
        renamed = ()  # a local model takes our own names (max_tokens), whatever its id says
    if family is None and provider_map and _litellm_sampling(model_id) is False:
        dropped, source = _MAP_NO_SAMPLING, "LiteLLM's map: supports_sampling_params false"
    if reasoning_effort == "none" and dropped and _base(model_id).startswith(_SAMPLING_WITHOUT_REASONING):
        # OpenAI: gpt-5.1 and later take temperature / top_p / logprobs when they do not reason
        dropped, source = (), "capability map: gpt-5.1+ with reasoning_effort none takes sampling parameters"
    if supports_stop is not None or supports_temperature is not None:
        source = "config" if source == "default" else f"config over {source}"
    if supports_temperature is True:
        dropped = ()
    elif supports_temperature is False:
        dropped = dropped or SAMPLING_PARAMS
    return RequestCapabilities(
        stop=stop if supports_stop is None else supports_stop,
        temperature="temperature" not in dropped,
        source=source,
        dropped=dropped,
        renamed=renamed,
    )


def spec_capabilities(spec: Any, reasoning_effort: str | None = None) -> RequestCapabilities:
    """:func:`request_capabilities` for a model spec (its ``model_id``, ``supports_*`` fields and
    ``reasoning_effort``, or the call's ``reasoning_effort`` when given)."""
    from .settings import ApiSpec

    effort = reasoning_effort if reasoning_effort is not None else getattr(spec, "reasoning_effort", None)
    return request_capabilities(
        str(getattr(spec, "model_id", "")),
        getattr(spec, "supports_stop", None),
        getattr(spec, "supports_temperature", None),
        provider_map=isinstance(spec, ApiSpec),
        reasoning_effort=effort if isinstance(effort, str) else None,
    )


def supports_stop_parameter(model_id: str) -> bool:
    """Whether a request to ``model_id`` carries ``stop`` (smolagents' function of this name, answered
    from the map: False for every id smolagents excludes, and for o1 and o3-mini too)."""
    return request_capabilities(model_id).stop
