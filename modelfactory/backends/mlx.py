"""``MLXModel``: a model run by ``mlx-lm`` on Apple silicon (smolagents' class).

MLX exists on macOS with Apple silicon only: anywhere else building an ``MLXModel`` raises
:class:`UnsupportedFeatureError` naming the platform (and ``modelfactory check`` says so), so a config
meant for a Mac fails at once on a Linux box instead of at its first call. Messages are flattened to
text, as smolagents does for MLX.
"""

from __future__ import annotations

import functools
import importlib.util
import platform
import sys
from typing import Any, ClassVar

from pydantic import Field, model_validator

from ..errors import MissingDependencyError, Problem, UnsupportedFeatureError
from ..messages import ChatMessage, TokenUsage
from ..model import GenerationRequest, Model
from ..settings import ModelSpec
from ._local import text_message

__all__ = ["MLXModel", "MLXSpec", "mlx_platform_problem"]

PLATFORM = "macOS on Apple silicon (arm64)"


def mlx_platform_problem() -> str | None:
    """Why MLX cannot run on this machine, or None where it can."""
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return None
    return f"MLXModel runs on {PLATFORM} only; this machine is {sys.platform} {platform.machine()}"


class MLXSpec(ModelSpec):
    # `modelfactory check` of every config reports this one as a warning off its platform
    platform_only: ClassVar[str] = PLATFORM
    model_id: str = Field(description="an mlx-lm model: a Hub id (mlx-community/...) or a local path")
    trust_remote_code: bool = False
    load_kwargs: dict[str, Any] = Field(default_factory=dict, description="other mlx_lm.load(...) arguments")

    @model_validator(mode="before")
    @classmethod
    def _flatten_default(cls, data: Any) -> Any:
        """Text-only messages, as smolagents' MLXModel sends (its default is true)."""
        if isinstance(data, dict) and data.get("flatten_messages_as_text") is None:
            data = {**data, "flatten_messages_as_text": True}
        return data

    def environment_problems(self) -> list[Problem]:
        problem = mlx_platform_problem()
        if problem is None and importlib.util.find_spec("mlx_lm") is None:
            problem = "MLXModel needs the 'mlx-lm' package, which is not installed"
        if problem is None:
            return []
        return [
            Problem(
                "_target_",
                problem,
                "on a Mac with Apple silicon: pip install 'modelfactory[mlx]'; "
                "elsewhere use TransformersModel or LlamaCppModel",
            )
        ]


class MLXModel(Model):
    """Chat through ``mlx_lm.generate``: the model loaded on first use (or :meth:`load`)."""

    Spec = MLXSpec
    spec: MLXSpec
    is_local: ClassVar[bool] = True

    def __init__(self, /, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        problem = mlx_platform_problem()
        if problem is not None:
            raise UnsupportedFeatureError(f"{problem} (use TransformersModel or LlamaCppModel here)")

    @functools.cached_property
    def _loaded(self) -> tuple[Any, Any]:
        try:
            import mlx_lm
        except ImportError:
            raise MissingDependencyError("mlx-lm", "mlx", "MLXModel") from None
        config = {"trust_remote_code": True} if self.spec.trust_remote_code else {}
        return mlx_lm.load(self.spec.model_id, tokenizer_config=config, **self.spec.load_kwargs)

    def load(self) -> MLXModel:
        self._loaded  # noqa: B018
        return self

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        import mlx_lm

        model, tokenizer = self._loaded
        rows = [text_message(m, i, "MLXModel") for i, m in enumerate(req.messages)]
        prompt = tokenizer.apply_chat_template(rows, add_generation_prompt=True, tokenize=False)
        params = dict(req.params)
        kwargs: dict[str, Any] = {"max_tokens": params.pop("max_tokens", 256)}
        if "temperature" in params or "top_p" in params:
            from mlx_lm.sample_utils import make_sampler

            kwargs["sampler"] = make_sampler(
                temp=params.get("temperature", 0.0), top_p=params.get("top_p", 0.0)
            )
        text = mlx_lm.generate(model, tokenizer, prompt=prompt, verbose=False, **kwargs)
        usage = TokenUsage(len(tokenizer.encode(prompt)), len(tokenizer.encode(text)))
        return ChatMessage(content=text, token_usage=usage)  # the base class trims at the stops
