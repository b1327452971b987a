"""``FallbackModel``: an ordered chain of models (local and remote mixed) tried in turn.

Why declarative: "use gpt-4o, and the local model when the API rate-limits us" belongs in the config
of an experiment, not in try/except blocks around every call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ..errors import BackendError, Problem
from ..messages import ChatMessage, ChatMessageStreamDelta
from ..model import GenerationRequest, Model
from ..settings import ModelSpec

__all__ = ["FallbackModel", "FallbackSpec", "failure_kind"]

FailureKind = Literal["rate_limit", "server_error", "timeout", "connection", "any"]
DEFAULT_FALLBACK_ON: list[FailureKind] = ["rate_limit", "server_error", "timeout", "connection"]


def failure_kind(exc: BaseException) -> str | None:
    """Classify a failed call by exception class and HTTP status (never by message text)."""
    if not isinstance(exc, BackendError):
        return None
    status = exc.status
    if status == 429:
        return "rate_limit"
    if status == 408:
        return "timeout"
    if status is not None and status >= 500:
        return "server_error"
    if status is None and exc.retryable:
        cause: BaseException | None = exc.__cause__
        while cause is not None:
            if "Timeout" in type(cause).__name__:
                return "timeout"
            cause = cause.__cause__ or cause.__context__
        return "connection"
    return None


class FallbackSpec(ModelSpec):
    main_argument: ClassVar[str] = "models"  # the one positional argument
    model_id: str = "fallback"
    models: list[Any] = Field(
        min_length=1, description="ordered model configs (each a mapping with _target_) or built models"
    )
    fallback_on: list[FailureKind] = Field(
        default_factory=lambda: list(DEFAULT_FALLBACK_ON),
        description="failure kinds that move on to the next model: rate_limit, server_error, timeout, "
        "connection, or any (every BackendError)",
    )

    @field_validator("models")
    @classmethod
    def _model_like(cls, value: list[Any]) -> list[Any]:
        for i, item in enumerate(value):
            if not isinstance(item, Model) and not (isinstance(item, Mapping) and "_target_" in item):
                raise ValueError(
                    f"models[{i}] must be a model config with _target_ (got {type(item).__name__})"
                )
        return value

    def problems(self) -> list[Problem]:
        from ..factory import validate_config

        out = []
        for i, item in enumerate(self.models):
            if isinstance(item, Mapping):
                out += [Problem(f"models[{i}].{p.key}", p.problem, p.fix) for p in validate_config(item)]
        return out


class FallbackModel(Model):
    """Calls ``models`` in order; a failure of a configured kind moves on to the next one.

    The reply's ``raw`` records which model served and what failed before it; when every model fails,
    one ``BackendError`` lists each attempt.
    """

    Spec = FallbackSpec
    spec: FallbackSpec
    supports_grammar = True  # each member decides; an unsupported feature is a member's clear error
    supports_response_format = True
    supports_tools = True

    def __init__(self, /, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from ..factory import build_model

        self.models: list[Model] = [m if isinstance(m, Model) else build_model(m) for m in self.spec.models]

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["models"] = [m.to_dict() for m in self.models]
        return data

    def secret_values(self) -> list[str]:
        """Every member's credentials (keys they resolve from the environment included): a member's
        reply or error may echo any of them."""
        out = super().secret_values()
        for m in self.models:
            out += m.secret_values()
        return list(dict.fromkeys(out))

    def _falls_back(self, exc: BaseException) -> bool:
        if "any" in self.spec.fallback_on:
            return isinstance(exc, BackendError)
        return failure_kind(exc) in self.spec.fallback_on

    def _member_kwargs(self, req: GenerationRequest) -> dict[str, Any]:
        return {
            "stop_sequences": req.stop_sequences or None,
            "grammar": req.grammar,
            "response_format": req.response_format,
            "tools_to_call_from": req.tools,
            **req.params,
        }

    def _exhausted(self, failures: list[tuple[Model, BackendError]]) -> BackendError:
        lines = [f"{i + 1}. {type(m).__name__} '{m.model_id}': {e}" for i, (m, e) in enumerate(failures)]
        last = failures[-1][1]
        return BackendError(
            f"all {len(failures)} models failed:\n" + "\n".join(lines),
            model_id=self.model_id,
            backend="FallbackModel",
            status=last.status,
        )

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        failures: list[tuple[Model, BackendError]] = []
        for model in self.models:
            try:
                reply = model.generate(req.messages, **self._member_kwargs(req))
            except BackendError as exc:
                if not self._falls_back(exc):
                    raise
                failures.append((model, exc))
                continue
            reply.raw = {
                "served_by": {
                    "index": len(failures),
                    "backend": type(model).__name__,
                    "model_id": model.model_id,
                },
                "failed": [
                    {"model_id": m.model_id, "status": e.status, "error": str(e)} for m, e in failures
                ],
                "response": reply.raw,
            }
            return reply
        raise self._exhausted(failures)

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        failures: list[tuple[Model, BackendError]] = []
        for model in self.models:
            stream = model.generate_stream(req.messages, **self._member_kwargs(req))
            try:
                first = next(stream, None)  # fall back only before anything was emitted
            except BackendError as exc:
                if not self._falls_back(exc):
                    raise
                failures.append((model, exc))
                continue
            if first is not None:
                yield first
            yield from stream
            return
        raise self._exhausted(failures)
