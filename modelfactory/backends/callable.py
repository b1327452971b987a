"""``CallableModel``: a user's own Python function, addressed by a dotted path in the config."""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import Field, field_serializer, field_validator

from ..errors import BackendError, ConfigError, Problem
from ..messages import ChatMessage, TokenUsage
from ..model import GenerationRequest, Model
from ..settings import ModelSpec

__all__ = ["CallableModel", "CallableSpec", "resolve_dotted"]


def resolve_dotted(path: str) -> Any:
    """Import ``package.module.attr`` (or ``package.module:attr``) and return the attribute."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
        parts = attr.split(".")
    else:
        bits = path.split(".")
        for i in range(len(bits) - 1, 0, -1):
            module_name = ".".join(bits[:i])
            try:
                importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                    continue
                raise
            parts = bits[i:]
            break
        else:
            raise ImportError(f"no importable module in {path!r}")
    obj: Any = importlib.import_module(module_name)
    for part in parts:
        obj = getattr(obj, part)
    return obj


class CallableSpec(ModelSpec):
    main_argument: ClassVar[str] = "fn"  # the one positional argument
    fn: Any = Field(
        description="dotted path to the function, e.g. examples.custom_model.custom_model (or the function)"
    )
    model_id: str = "callable"
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for fn")

    @field_validator("fn")
    @classmethod
    def _importable(cls, value: Any) -> Any:
        if callable(value):
            return value
        if not isinstance(value, str):
            raise ValueError(f"must be a dotted path string, got {type(value).__name__}")
        try:
            target = resolve_dotted(value)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError(f"cannot import {value!r}: {exc}") from None
        if not callable(target):
            raise ValueError(f"{value!r} is a {type(target).__name__}, not a callable")
        return target

    @field_serializer("fn")
    def _dotted(self, value: Any) -> str:
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"


class CallableModel(Model):
    """Wraps ``fn(messages, stop_sequences=..., grammar=..., ...)``; passes only what it accepts."""

    Spec = CallableSpec
    spec: CallableSpec
    supports_grammar = True
    supports_response_format = True
    supports_tools = True

    @property
    def _fn(self) -> Callable[..., Any]:
        return self.spec.fn  # type: ignore[no-any-return]

    @functools.cached_property
    def _accepted(self) -> tuple[set[str], bool]:
        try:
            params = inspect.signature(self._fn).parameters.values()
        except (TypeError, ValueError):
            return set(), True
        names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        return names, any(p.kind == p.VAR_KEYWORD for p in params)

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        names, takes_any = self._accepted
        offered: dict[str, Any] = {
            "stop_sequences": req.stop_sequences or None,
            "grammar": req.grammar,
            "response_format": req.response_format,
            "tools_to_call_from": req.tools,
            **req.params,
            **self.spec.kwargs,
        }
        for key, value in offered.items():
            feature = key in ("grammar", "response_format", "tools_to_call_from")
            if feature and value is not None and not takes_any and key not in names:
                raise ConfigError(
                    [
                        Problem(
                            "fn",
                            f"{self.spec.model_dump()['fn']} does not take `{key}`",
                            f"add a `{key}` parameter to it",
                        )
                    ]
                )
        call_kwargs = {k: v for k, v in offered.items() if (takes_any or k in names) and v is not None}
        result = self._fn(req.messages, **call_kwargs)
        return self._to_message(result)

    def _to_message(self, result: Any) -> ChatMessage:
        if isinstance(result, ChatMessage):
            return result
        if isinstance(result, str):
            return ChatMessage(content=result, raw=result)
        content = getattr(result, "content", None)
        if isinstance(content, str) or content is None and hasattr(result, "content"):
            usage = getattr(result, "token_usage", None)
            return ChatMessage(
                content=content,
                tool_calls=getattr(result, "tool_calls", None),
                token_usage=usage if isinstance(usage, TokenUsage) else None,
                raw=result,
            )
        if isinstance(result, dict) and isinstance(result.get("content"), str):
            return ChatMessage(content=result["content"], raw=result)
        raise BackendError(
            f"{self.spec.model_dump()['fn']} returned {type(result).__name__}; return a string or an object with .content",
            model_id=self.model_id,
            backend="CallableModel",
        )
