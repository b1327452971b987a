"""``VLLMModel``: a model served in-process by vLLM's Python API (``vllm.LLM``), smolagents' class.

vLLM runs on Linux with a CUDA GPU only (``pip install 'modelfactory[vllm]'`` there; README: "vLLM on a
GPU node"). Elsewhere the config still validates, ``modelfactory check`` says vllm is missing and on
which platform it installs, and a call raises :class:`MissingDependencyError`. For many concurrent
callers, prefer a vLLM server and ``OpenAIServerModel`` (``conf/model/gpu_server.yaml``).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any, ClassVar

from pydantic import Field

from ..errors import BackendError, MissingDependencyError, Problem
from ..messages import ChatMessage, TokenUsage
from ..model import GenerationRequest, Model
from ..settings import ModelSpec
from ._local import text_message, with_tools_block

__all__ = ["VLLMModel", "VLLMSpec"]

PLATFORM = "Linux with a CUDA GPU"


class VLLMSpec(ModelSpec):
    # `modelfactory check` of every config reports this one as a warning off its platform
    platform_only: ClassVar[str] = PLATFORM
    cache_exclude = frozenset({"gpu_memory_utilization", "tensor_parallel_size"})
    model_id: str = Field(description="a Hub id or local path vLLM loads, e.g. Qwen/Qwen2.5-7B-Instruct")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs to shard the model over")
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0, description="share of GPU memory vLLM takes")
    max_model_len: int | None = Field(None, gt=0, description="context length; unset: the model's own")
    dtype: str = Field("auto", description="weights dtype: auto, bfloat16, float16, ...")
    trust_remote_code: bool = False
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="other vllm.LLM(...) arguments, passed as given"
    )

    def environment_problems(self) -> list[Problem]:
        if importlib.util.find_spec("vllm") is None:
            return [
                Problem(
                    "_target_",
                    f"VLLMModel needs the 'vllm' package, which is not installed (vLLM runs on {PLATFORM} only)",
                    "on a GPU node: pip install 'modelfactory[vllm]' (README: vLLM on a GPU node); "
                    "elsewhere use TransformersModel or LlamaCppModel",
                )
            ]
        return []


class VLLMModel(Model):
    """Chat through ``vllm.LLM.chat``: the model loaded once, on first use (or :meth:`load`)."""

    Spec = VLLMSpec
    spec: VLLMSpec
    is_local: ClassVar[bool] = True
    supports_tools = True  # shown to the model in its chat template (or a tools block), parsed back

    @functools.cached_property
    def llm(self) -> Any:
        try:
            import vllm
        except ImportError:
            raise MissingDependencyError(
                "vllm", "vllm", f"VLLMModel (vLLM runs on {PLATFORM} only)"
            ) from None
        spec = self.spec
        return vllm.LLM(
            model=spec.model_id,
            tensor_parallel_size=spec.tensor_parallel_size,
            gpu_memory_utilization=spec.gpu_memory_utilization,
            max_model_len=spec.max_model_len,
            dtype=spec.dtype,
            trust_remote_code=spec.trust_remote_code,
            **spec.model_kwargs,
        )

    def load(self) -> VLLMModel:
        self.llm  # noqa: B018
        return self

    def sampling_params(self, req: GenerationRequest) -> Any:
        """``vllm.SamplingParams`` of ``req``: max_tokens, temperature, top_p, seed, the stops, the rest."""
        from vllm import SamplingParams

        params = dict(req.params)
        if req.provider_stop:
            params["stop"] = list(req.provider_stop)
        return SamplingParams(**params)

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        rows = [text_message(m, i, "VLLMModel") for i, m in enumerate(req.messages)]
        if req.tools:
            rows = with_tools_block(rows, req.tools)
        out = self.llm.chat([rows], self.sampling_params(req), use_tqdm=False)[0]
        completion = out.outputs[0]
        reply = ChatMessage(
            content=completion.text,
            raw=out,
            token_usage=TokenUsage(len(out.prompt_token_ids or []), len(completion.token_ids or [])),
        )
        if req.tools:
            try:
                return self.parse_tool_calls(reply)
            except BackendError:
                if req.tool_choice == "required":
                    raise
        return reply
