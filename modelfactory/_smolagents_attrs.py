"""The attributes smolagents' ``Model`` / ``ApiModel`` expose, on every modelfactory model.

Why: code written for smolagents reads ``model.flatten_messages_as_text``, ``model.kwargs``,
``model.custom_role_conversions``, ``model.supports_stop_parameter``, ``model.api_base``... Each gets
its meaning here, read from the validated spec (read-only: the spec is the one place a setting lives, and
a model's clients are built from it). A name smolagents has and we do not (``retryer``, ``rate_limiter``,
the private ``_prepare_completion_kwargs``) raises an ``AttributeError`` that says what to use instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from .capabilities import spec_capabilities

if TYPE_CHECKING:
    from .settings import ModelSpec

__all__ = ["SMOLAGENTS_ONLY", "SmolagentsAttributes"]

# smolagents' names with no counterpart here, and what to use instead (the AttributeError says it).
SMOLAGENTS_ONLY: dict[str, str] = {
    "retryer": "retries follow the model's retry policy: model.spec.retry (modelfactory/retry.py)",
    "rate_limiter": "the rate limit is model.spec.requests_per_minute, applied by the model itself",
    "_apply_rate_limit": "the rate limit (model.spec.requests_per_minute) is applied by every call",
    "_prepare_completion_kwargs": "a call's request is built by model._request (a GenerationRequest)",
    "client": "this backend has no API client (a local model, or a function)",
    "streamer": "generate_stream() streams; each call makes its own streamer",
    "make_stopping_criteria": "stop sequences are the model's stop contract (stop_sequences= on each call)",
    "create_client": "this backend has no API client (a local model, or a function)",
}


class SmolagentsAttributes:
    """Mixed into :class:`modelfactory.model.Model`."""

    if TYPE_CHECKING:
        spec: ModelSpec

    # Only JSON tool calls written as {"name": ..., "arguments": ...} are parsed (aliases.py refuses others).
    tool_name_key: ClassVar[str] = "name"
    tool_arguments_key: ClassVar[str] = "arguments"
    # A backend that reads text only (a local causal LM): its messages are text whatever the config says.
    text_only: ClassVar[bool] = False

    @property
    def flatten_messages_as_text(self) -> bool:
        """True when messages reach the model as plain text: configured so, or a text-only backend
        (smolagents says True for a causal LM, False for a vision-language model)."""
        return self.spec.flatten_messages_as_text or type(self).text_only

    @property
    def custom_role_conversions(self) -> dict[str, str]:
        """The configured role map (merged over tool-call→assistant, tool-response→user at each call)."""
        return dict(self.spec.custom_role_conversions or {})

    @property
    def kwargs(self) -> Mapping[str, Any]:
        """The generation parameters sent with every call (temperature, max_tokens, generation_kwargs),
        read-only: configure them on the model; a per-call kwarg overrides them."""
        return MappingProxyType(self.spec.generation_defaults())

    @property
    def supports_stop_parameter(self) -> bool:
        """Whether ``stop`` goes to the provider (else the reply is trimmed afterwards):
        ``supports_stop`` in the config, else the capability map (modelfactory/capabilities.py)."""
        return spec_capabilities(self.spec).stop

    if not TYPE_CHECKING:  # mypy keeps checking attribute names on models

        def __getattr__(self, name: str) -> Any:
            """Spec fields as read-only attributes (``model.api_base``, ``model.temperature``,
            ``model.client_kwargs``); smolagents-only names raise, saying what to use instead."""
            if name in SMOLAGENTS_ONLY:
                raise AttributeError(
                    f"{type(self).__name__} has no `{name}` (smolagents' name): {SMOLAGENTS_ONLY[name]}"
                )
            if name.startswith("_") or name == "spec":
                raise AttributeError(name)
            spec = self.__dict__.get("spec")
            if spec is not None and name in type(spec).model_fields:
                value = getattr(spec, name)
                return MappingProxyType(value) if isinstance(value, dict) else value
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
