"""VLLMModel here (no GPU, no vllm): its config validates, `check` and a call say what is missing and
where vLLM runs. The model itself runs on a GPU node (README: vLLM on a GPU node)."""

from __future__ import annotations

import importlib.util

import pytest

from modelfactory import VLLMModel
from modelfactory.errors import ConfigError, MissingDependencyError
from modelfactory.factory import validate_config

no_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")


def test_config_validates_and_bad_values_name_their_key() -> None:
    model = VLLMModel("Qwen/Qwen2.5-0.5B-Instruct", gpu_memory_utilization=0.5, max_tokens=8)
    assert model.spec.gpu_memory_utilization == 0.5 and model.is_local
    with pytest.raises(ConfigError) as info:
        VLLMModel("m", gpu_memory_utilization=1.5, tensor_parallel_size=0)
    assert {p.key for p in info.value.problems} == {"gpu_memory_utilization", "tensor_parallel_size"}


@no_vllm
def test_check_and_a_call_name_the_extra_and_the_platform() -> None:
    problems = validate_config({"_target_": "VLLMModel", "model_id": "m"}, environment=True)
    assert len(problems) == 1
    assert "Linux with a CUDA GPU" in problems[0].problem and "modelfactory[vllm]" in problems[0].fix
    with pytest.raises(MissingDependencyError, match=r"Linux with a CUDA GPU.*modelfactory\[vllm\]"):
        VLLMModel("m").generate([{"role": "user", "content": "hi"}])
