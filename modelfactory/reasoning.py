"""One portable ``reasoning_effort`` (``none | minimal | low | medium | high | max``), mapped per backend
and model family: the maintained map behind it, as :mod:`modelfactory.capabilities` is for ``stop``.

Why one knob: every provider spells it differently (OpenAI's ``reasoning_effort``, Anthropic's
``thinking.budget_tokens``, Gemini's thinking level or budget, a chat template's ``enable_thinking``), so
a sweep over ``model.reasoning_effort=low,high`` could not cross backends. A spec says which wire style
it speaks (``reasoning_style``); the model id picks the family row. A family the map knows accepts only
the levels listed there and ``modelfactory check`` names them; an id the map does not know gets the
value passed on under the provider's name (the provider is the judge).

Anthropic: ``max_tokens`` keeps meaning the answer's length; the thinking budget is added on top (the
API requires ``budget_tokens`` >= 1024 and below ``max_tokens``), and ``temperature`` / ``top_k`` are
not sent while thinking (the API refuses them). Models with adaptive thinking (Claude Opus/Sonnet 4.6 and
later, :data:`ANTHROPIC_ADAPTIVE`) get ``thinking={"type": "adaptive", "display": "summarized"}`` and
``output_config={"effort": <level>}`` instead (the model decides how much to think; a fixed budget is
deprecated on 4.6 and refused from Opus 4.7), with the level's budget still added to ``max_tokens`` as
room for the thinking, which counts toward it; the families that always think take no ``none``. Local chat templates have only a switch: ``none`` turns
thinking off, every other level on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError, Problem

__all__ = [
    "ANTHROPIC_ADAPTIVE",
    "ANTHROPIC_BUDGETS",
    "EFFORTS",
    "Effort",
    "ReasoningRule",
    "apply_reasoning",
    "reasoning_problems",
    "reasoning_rule",
    "template_kwargs",
]

Effort = Literal["none", "minimal", "low", "medium", "high", "max"]
EFFORTS: tuple[str, ...] = ("none", "minimal", "low", "medium", "high", "max")

# Anthropic extended thinking: budget_tokens per level (the API's minimum is 1024).
ANTHROPIC_BUDGETS: Mapping[str, int] = {"low": 1024, "medium": 4096, "high": 16384, "max": 32000}
ANTHROPIC_DEFAULT_ANSWER = 4096  # answer tokens when max_tokens is unset (what litellm sends by default)

_ALL = EFFORTS
_OFF = ("none",)
_O_SERIES = ("low", "medium", "high")
_GPT_5 = ("minimal", "low", "medium", "high")
_GPT_5_1 = ("none", "low", "medium", "high")
_GPT_5_2 = ("none", "low", "medium", "high", "max")  # max is OpenAI's "xhigh"
_CLAUDE = ("none", "low", "medium", "high", "max")
_CLAUDE_ALWAYS_ON = ("low", "medium", "high", "max")  # thinking cannot be turned off
_GEMINI_2_5 = ("none", "minimal", "low", "medium", "high")
_GEMINI_2_5_PRO = ("minimal", "low", "medium", "high")  # 2.5 Pro cannot turn thinking off
_GEMINI_3 = ("low", "high")
_GEMINI_3_FLASH = ("minimal", "low", "medium", "high")

# Claude families with adaptive thinking (Anthropic's docs; litellm's model map flags them
# supports_adaptive_thinking, and thinking_always_on for those that cannot turn it off). Looked up before
# FAMILIES, the same way; the always-on ids first, since "claude-opus-5" also matches "claude-opus-5-5".
ANTHROPIC_ADAPTIVE: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("claude-mythos-*", _CLAUDE_ALWAYS_ON, "adaptive thinking, always on"),
    ("claude-fable-*", _CLAUDE_ALWAYS_ON, "adaptive thinking, always on"),
    ("claude-opus-5-5", _CLAUDE_ALWAYS_ON, "adaptive thinking, always on"),
    ("claude-sonnet-5-5", _CLAUDE_ALWAYS_ON, "adaptive thinking, always on"),
    ("claude-opus-5", _CLAUDE, "adaptive thinking"),
    ("claude-sonnet-5", _CLAUDE, "adaptive thinking"),
    ("claude-haiku-5-5", _CLAUDE, "adaptive thinking"),
    ("claude-opus-4-8", _CLAUDE, "adaptive thinking (no fixed budget)"),
    ("claude-opus-4-7", _CLAUDE, "adaptive thinking (no fixed budget)"),
    ("claude-opus-4-6", _CLAUDE, "adaptive thinking (a fixed budget is deprecated)"),
    ("claude-sonnet-4-6", _CLAUDE, "adaptive thinking (a fixed budget is deprecated)"),
)

# (provider, family, accepted levels, why); first match wins, matched like capabilities.FAMILIES
# (a family matches itself and ids continuing it with "-" or "."; a trailing "*" is a bare prefix).
FAMILIES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("openai", "gpt-5-chat", _OFF, "gpt-5-chat is not a reasoning model"),
    ("openai", "gpt-5-pro", ("high",), "gpt-5-pro reasons at high only"),
    ("openai", "gpt-5.2", _GPT_5_2, "gpt-5.2: none..xhigh"),
    ("openai", "gpt-5.1", _GPT_5_1, "gpt-5.1: none..high"),
    ("openai", "gpt-5", _GPT_5, "gpt-5: minimal..high"),
    ("openai", "o1", _O_SERIES, "o-series: low..high"),
    ("openai", "o3", _O_SERIES, "o-series: low..high"),
    ("openai", "o4", _O_SERIES, "o-series: low..high"),
    ("openai", "gpt-4*", _OFF, "gpt-4 models do not reason"),
    ("openai", "gpt-3.5*", _OFF, "gpt-3.5 models do not reason"),
    ("anthropic", "claude-3-7*", _CLAUDE, "extended thinking"),
    ("anthropic", "claude-3*", _OFF, "Claude 3 / 3.5 have no extended thinking"),
    ("anthropic", "claude-*", _CLAUDE, "extended thinking (Claude 4 and later)"),
    ("gemini", "gemini-2.5-pro", _GEMINI_2_5_PRO, "Gemini 2.5 Pro always thinks"),
    ("gemini", "gemini-2.5", _GEMINI_2_5, "Gemini 2.5 thinking budget"),
    ("gemini", "gemini-3*flash*", _GEMINI_3_FLASH, "Gemini 3 Flash thinking levels"),
    ("gemini", "gemini-3*", _GEMINI_3, "Gemini 3 thinking levels"),
    ("gemini", "gemini-*", _OFF, "Gemini before 2.5 does not think"),
)


@dataclass(frozen=True)
class ReasoningRule:
    """What one model takes: its wire ``style`` and the levels it accepts."""

    style: str  # openai | anthropic | gemini | local | unsupported
    accepted: tuple[str, ...]
    source: str
    adaptive: bool = False  # Anthropic adaptive thinking (thinking.type adaptive + output_config.effort)


def _base(model_id: str) -> str:
    return model_id.strip().lower().rsplit("/", 1)[-1]


def _matches(base: str, family: str) -> bool:
    if "*" in family:
        head, _, rest = family.partition("*")
        if not base.startswith(head):
            return False
        needle = rest.rstrip("*")
        return needle in base[len(head) :] if needle else True
    return base == family or base.startswith((family + "-", family + "."))


def _provider(style: str, model_id: str) -> str:
    """The provider row set: a litellm id names it (``anthropic/...``, ``gemini/...``, a bare name)."""
    if style != "litellm":
        return style
    mid = model_id.strip().lower()
    head = mid.split("/", 1)[0] if "/" in mid else ""
    base = _base(mid)
    if head in ("anthropic", "bedrock", "vertex_ai") and "claude" in base or base.startswith("claude"):
        return "anthropic"
    if head in ("gemini", "vertex_ai") or base.startswith("gemini"):
        return "gemini"
    return "openai"


def reasoning_rule(style: str | None, model_id: str) -> ReasoningRule:
    """The rule for ``model_id`` on a backend of ``style`` (openai | litellm | local | None)."""
    if style is None:
        return ReasoningRule("unsupported", _OFF, "this backend has no reasoning setting")
    if style == "local":
        return ReasoningRule("local", _ALL, "chat template switch `enable_thinking` (none: off, else on)")
    provider = _provider(style, model_id)
    base = _base(model_id)
    if provider == "anthropic":
        for family, accepted, why in ANTHROPIC_ADAPTIVE:
            if _matches(base, family):
                return ReasoningRule(provider, accepted, f"reasoning map: {why}", adaptive=True)
    for prov, family, accepted, why in FAMILIES:
        if prov == provider and _matches(base, family):
            return ReasoningRule(provider, accepted, f"reasoning map: {why}")
    return ReasoningRule(provider, _ALL, "not in the reasoning map: passed on as given")


def _rule_of(spec: Any) -> ReasoningRule:
    return reasoning_rule(getattr(type(spec), "reasoning_style", None), str(getattr(spec, "model_id", "")))


def _refusal(key: str, effort: str, rule: ReasoningRule, model_id: str) -> Problem:
    names = ", ".join(rule.accepted)
    return Problem(
        key,
        f"{model_id!r} does not take reasoning_effort={effort!r} ({rule.source}); it takes: {names}",
        f"set {key} to one of: {names}, or null (the provider's default)",
    )


def reasoning_problems(spec: Any) -> list[Problem]:
    """``model.reasoning_effort`` checked against the map (``modelfactory check`` and every build)."""
    effort = getattr(spec, "reasoning_effort", None)
    if effort is None:
        return []
    rule = _rule_of(spec)
    if effort not in rule.accepted:
        return [_refusal("reasoning_effort", effort, rule, str(spec.model_id))]
    return []


def template_kwargs(spec: Any) -> dict[str, Any]:
    """Chat-template variables for a local model: ``enable_thinking`` when an effort is set."""
    effort = getattr(spec, "reasoning_effort", None)
    return {} if effort is None else {"enable_thinking": effort != "none"}


_OPENAI_NAMES = {"max": "xhigh"}


def apply_reasoning(spec: Any, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the effort (the call's ``reasoning_effort``, else the spec's) in the provider's
    terms. A local model's switch travels in its chat template instead (:func:`template_kwargs`)."""
    out = dict(params)
    rule = _rule_of(spec)
    if rule.style == "unsupported" and "reasoning_effort" in out:
        return out  # a backend without the map (HF Inference, a callable): a kwarg goes through as given
    effort = out.pop("reasoning_effort", None)
    effort = effort if effort is not None else getattr(spec, "reasoning_effort", None)
    if effort is None:
        return out
    if effort not in rule.accepted:
        raise ConfigError([_refusal("reasoning_effort", str(effort), rule, str(spec.model_id))])
    if rule.accepted == _OFF:  # a model that does not reason: nothing to send
        return out
    if rule.style in ("openai", "gemini"):  # litellm maps Gemini's levels to thinkingLevel / thinkingBudget
        out["reasoning_effort"] = _OPENAI_NAMES.get(effort, effort) if rule.style == "openai" else effort
    elif rule.style == "anthropic" and effort != "none":
        budget = ANTHROPIC_BUDGETS.get(effort, ANTHROPIC_BUDGETS["low"])
        answer = out.get("max_tokens") or ANTHROPIC_DEFAULT_ANSWER
        out["max_tokens"] = int(answer) + budget  # adaptive: room for what the model decides to think
        if rule.adaptive:  # summarized: the thinking text comes back (reasoning_content), not omitted
            out["thinking"] = {"type": "adaptive", "display": "summarized"}
            out["output_config"] = {"effort": effort}
        else:
            out["thinking"] = {"type": "enabled", "budget_tokens": budget}
        for key in ("temperature", "top_k"):  # refused while thinking
            out.pop(key, None)
    return out
