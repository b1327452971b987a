"""modelfactory: declarative configs in, validated ready-to-call chat models out.

Names are loaded on first access, so ``import modelfactory`` stays cheap and an API-only program never
imports torch, transformers or litellm. Backend classes are exported from the one backend registry
(:mod:`modelfactory.backends.registry`); everything else from ``_EXPORTS``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .backends.registry import BACKENDS as _BACKENDS

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Model": "modelfactory.model",
    "GenerationRequest": "modelfactory.model",
    "ChatMessage": "modelfactory.messages",
    "ChatMessageStreamDelta": "modelfactory.messages",
    "MessageRole": "modelfactory.messages",
    "TokenUsage": "modelfactory.messages",
    "ToolCall": "modelfactory.messages",
    "ToolCallFunction": "modelfactory.messages",
    "ModelFactoryError": "modelfactory.errors",
    "ConfigError": "modelfactory.errors",
    "BackendError": "modelfactory.errors",
    "CacheMissError": "modelfactory.errors",
    "MessageError": "modelfactory.errors",
    "MissingDependencyError": "modelfactory.errors",
    "UnsupportedFeatureError": "modelfactory.errors",
    "Problem": "modelfactory.errors",
    "build_model": "modelfactory.factory",
    "validate_config": "modelfactory.factory",
    "run_items": "modelfactory.job.runner",
    "load_dataset": "modelfactory.job.items",
    "RunStats": "modelfactory.job.runner",
    "write_report": "modelfactory.report",
    "compare_sweeps": "modelfactory.report",
    "Price": "modelfactory.pricing",
    "price_for": "modelfactory.pricing",
    "cost_usd": "modelfactory.pricing",
}

__all__ = sorted({*_EXPORTS, *_BACKENDS}) + ["__version__"]

if TYPE_CHECKING:
    from .backends.azure import AzureOpenAIModel, AzureOpenAIServerModel
    from .backends.bedrock import AmazonBedrockModel
    from .backends.callable import CallableModel
    from .backends.fallback import FallbackModel
    from .backends.hf_inference import HfApiModel, InferenceClientModel
    from .backends.litellm import LiteLLMModel
    from .backends.litellm_router import LiteLLMRouterModel
    from .backends.llamacpp import LlamaCppModel
    from .backends.mlx import MLXModel
    from .backends.openai import OpenAIModel, OpenAIServerModel
    from .backends.openvino import OpenVINOModel
    from .backends.transformers import TransformersModel
    from .backends.vllm import VLLMModel
    from .errors import (
        BackendError,
        CacheMissError,
        ConfigError,
        MessageError,
        MissingDependencyError,
        ModelFactoryError,
        Problem,
        UnsupportedFeatureError,
    )
    from .factory import build_model, validate_config
    from .job.items import load_dataset
    from .job.runner import RunStats, run_items
    from .messages import (
        ChatMessage,
        ChatMessageStreamDelta,
        MessageRole,
        TokenUsage,
        ToolCall,
        ToolCallFunction,
    )
    from .model import GenerationRequest, Model
    from .pricing import Price, cost_usd, price_for
    from .report import compare_sweeps, write_report


def __getattr__(name: str) -> Any:
    if name in _BACKENDS:
        module, _, attr = _BACKENDS[name].rpartition(".")
    elif name in _EXPORTS:
        module, attr = _EXPORTS[name], name
    else:
        raise AttributeError(f"module 'modelfactory' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
