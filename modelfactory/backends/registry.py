"""The one list of backends: each short name users may write as ``_target_`` (and import from
``modelfactory``), and the class it names.

Dotted paths, not classes: reading the registry imports no backend (``import modelfactory`` stays cheap,
and a config is checked without importing an SDK it does not use). ``factory.locate_target`` resolves a
name, ``modelfactory.__getattr__`` exports it; adding a backend is one line here.
"""

from __future__ import annotations

__all__ = ["BACKENDS", "backend_path"]

BACKENDS: dict[str, str] = {
    "TransformersModel": "modelfactory.backends.transformers.TransformersModel",
    "HfApiModel": "modelfactory.backends.hf_inference.HfApiModel",
    "InferenceClientModel": "modelfactory.backends.hf_inference.HfApiModel",  # smolagents' name
    "LiteLLMModel": "modelfactory.backends.litellm.LiteLLMModel",
    "OpenAIServerModel": "modelfactory.backends.openai.OpenAIServerModel",
    "OpenAIModel": "modelfactory.backends.openai.OpenAIModel",  # smolagents' name
    "AzureOpenAIServerModel": "modelfactory.backends.azure.AzureOpenAIServerModel",
    "AzureOpenAIModel": "modelfactory.backends.azure.AzureOpenAIModel",  # smolagents' name
    "CallableModel": "modelfactory.backends.callable.CallableModel",
    "FallbackModel": "modelfactory.backends.fallback.FallbackModel",
    "LlamaCppModel": "modelfactory.backends.llamacpp.LlamaCppModel",
    "AmazonBedrockModel": "modelfactory.backends.bedrock.AmazonBedrockModel",
    "LiteLLMRouterModel": "modelfactory.backends.litellm_router.LiteLLMRouterModel",
    "VLLMModel": "modelfactory.backends.vllm.VLLMModel",
    "MLXModel": "modelfactory.backends.mlx.MLXModel",
    "OpenVINOModel": "modelfactory.backends.openvino.OpenVINOModel",
    "OpenAIResponsesModel": "modelfactory.backends.openai_responses.OpenAIResponsesModel",
}


def backend_path(target: str) -> str | None:
    """The dotted path of a registered backend named by ``target``: its short name, its dotted path, or
    ``modelfactory.<Name>``; None for anything else (a user's own class)."""
    if target in BACKENDS:
        return BACKENDS[target]
    if target in BACKENDS.values():
        return target
    head, _, name = target.rpartition(".")
    return BACKENDS.get(name) if head == "modelfactory" else None
