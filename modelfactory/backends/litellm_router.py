"""``LiteLLMRouterModel``: LiteLLM's Router over a ``model_list`` from the config (smolagents' class).

``model_id`` names a model group; the Router picks one of the group's deployments per request (load
balancing, its routing strategy, cooldowns). Each deployment's ``litellm_params`` carries its own model,
``api_base`` and ``api_key`` (``${oc.env:...}`` in a config), so nothing is read from the spec's own
key fields. Retries: the Router's own are off (``num_retries=0``), our ``retry`` policy owns them, as for
``LiteLLMModel``. The Router is built on first use (litellm's import takes seconds).
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import Field, field_validator, model_validator

from ..errors import MessageError, Problem
from ..model import GenerationRequest
from ..settings import ApiSpec
from . import _openai_wire as wire
from ._api import reserved_params
from .litellm import RESERVED, LiteLLMModel, import_litellm, text_only_default

__all__ = ["LiteLLMRouterModel", "LiteLLMRouterSpec"]

# Router(...) arguments the adapter sets itself: the deployments come from model_list, retries from `retry`.
_ROUTER_RESERVED = frozenset({"model_list", "num_retries", "max_retries"})


class LiteLLMRouterSpec(ApiSpec):
    sdk = ("litellm", "litellm")
    cache_exclude = frozenset({"client_kwargs"})
    model_id: str = Field(description="the model group to call: a `model_name` of model_list")
    model_list: list[dict[str, Any]] = Field(
        description="the Router's deployments: [{model_name: <group>, litellm_params: {model: openai/..., "
        "api_base: ..., api_key: ...}}, ...]"
    )
    client_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="other litellm Router(...) arguments: routing_strategy, cooldown_time, fallbacks, ...",
    )
    completion_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for Router.completion, passed as given"
    )

    @field_validator("model_list")
    @classmethod
    def _deployments(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, item in enumerate(value):
            params = item.get("litellm_params")
            if not isinstance(item.get("model_name"), str) or not (
                isinstance(params, dict) and isinstance(params.get("model"), str)
            ):
                raise ValueError(
                    f"entry {i} needs a string model_name and litellm_params with a string model, "
                    "e.g. {model_name: group-1, litellm_params: {model: openai/gpt-4o-mini}}"
                )
        if not value:
            raise ValueError("is empty: give at least one deployment")
        return value

    @model_validator(mode="before")
    @classmethod
    def _flatten_default(cls, data: Any) -> Any:
        """As smolagents does: flattened messages for groups named like the text-only providers."""
        return text_only_default(data)

    def problems(self) -> list[Problem]:
        out = []
        groups = sorted({str(item["model_name"]) for item in self.model_list})
        if self.model_id not in groups:
            out.append(
                Problem(
                    "model_id", f"{self.model_id!r} is no model_name of model_list", f"use one of: {groups}"
                )
            )
        for key in reserved_params(self.client_kwargs, _ROUTER_RESERVED):
            fix = "use model.model_list" if key == "model_list" else "use model.retry.max_attempts"
            out.append(Problem(f"client_kwargs.{key}", "is set by the adapter", fix))
        for key in reserved_params(self.completion_kwargs, RESERVED):
            out.append(
                Problem(
                    f"completion_kwargs.{key}",
                    "is set by the adapter",
                    "put it in the deployment's litellm_params, or pass it to the call",
                )
            )
        return out


class LiteLLMRouterModel(LiteLLMModel):
    """Chat completions through ``litellm.Router(model_list=...).completion(model=<group>)``."""

    Spec = LiteLLMRouterSpec  # type: ignore[assignment]
    spec: LiteLLMRouterSpec  # type: ignore[assignment]

    def batch_adapter(self) -> None:
        return None  # a Router spreads calls over deployments: no one provider's batch endpoint

    @functools.cached_property
    def router(self) -> Any:
        return self.create_client()

    @property
    def client(self) -> Any:
        """The ``litellm.Router`` (smolagents' ``LiteLLMRouterModel.client``), built on first use."""
        return self.router

    def create_client(self) -> Any:
        """smolagents' hook: ``Router(model_list=..., **client_kwargs)``, its own retries off."""
        import_litellm(type(self).__name__)
        from litellm.router import Router

        spec = self.spec
        return Router(model_list=spec.model_list, num_retries=0, **spec.client_kwargs)

    def _call_kwargs(self, req: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        bad = reserved_params(req.params, RESERVED)
        if bad:
            raise MessageError(
                f"{type(self).__name__}: {', '.join(bad)} cannot be passed as a generation kwarg "
                "(put it in the deployment's litellm_params, or use stop_sequences / tools_to_call_from)"
            )
        kwargs: dict[str, Any] = {**self.spec.completion_kwargs, **req.params}
        kwargs.update(model=self.model_id, messages=req.messages, timeout=self.spec.timeout)
        kwargs.update(wire.request_fields(req, stream=stream))
        return kwargs

    def _sender(self) -> Any:
        return self.router

    def _auth_hint(self) -> str:
        return " (check the api_key in the deployment's litellm_params of model.model_list)"

    def _endpoint(self) -> str:
        return f"the LiteLLM Router group {self.model_id!r}"
