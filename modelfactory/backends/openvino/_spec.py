"""OpenVINOModel's spec: where the model comes from, its weight format, precision and scheduler."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from ...errors import ConfigError, Problem
from ...settings import ModelSpec
from .._local import usable_cpus
from ..transformers._sources import gguf_ref, looks_like_path

__all__ = ["OpenVINOSpec"]

_EXTRA = "openvino"
# Sampling parameters mapped onto openvino_genai.GenerationConfig (generation_kwargs or per call),
# besides temperature / top_p / max_tokens / seed which every backend takes.
_SAMPLING = frozenset({"top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"})
_PARAMS = _SAMPLING | {"temperature", "top_p", "max_tokens", "max_new_tokens", "seed", "tool_choice"}
# Plugin properties the spec owns: not allowed in ov_config.
_OWNED = {
    "INFERENCE_NUM_THREADS": "num_threads",
    "INFERENCE_PRECISION_HINT": "inference_precision",
    "KV_CACHE_PRECISION": "kv_cache_precision",
}


class OpenVINOSpec(ModelSpec):
    # Threads decide speed, not tokens.
    cache_exclude: ClassVar[frozenset[str]] = frozenset({"num_threads"})

    model_id: str = Field(
        description="an OpenVINO IR directory (openvino_model.xml + openvino_tokenizer.xml), a Hub repo of "
        "one (e.g. OpenVINO/SmolLM2-135M-Instruct-int8-ov), or a GGUF file (a path or "
        "pkg:<package>/<file>), converted once into the user cache dir"
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of a Hub repo")
    weight_format: Literal["int8", "int4", "fp16"] = Field(
        "fp16",
        description="weights of a model converted from GGUF: fp16 (agrees with transformers fp32 at >= 99% of "
        "teacher-forced positions, and as fast as int8 with f32 activations), int8 (Q8_0 blocks of 32: half "
        "the memory, ~95% agreement), int4 (smaller and faster; changes answers). An IR directory is used "
        "as exported",
    )
    device: str = Field("CPU", description="OpenVINO device: CPU, GPU, ...")
    num_threads: int | None = Field(
        None, gt=0, description="inference threads (INFERENCE_NUM_THREADS); null: OpenVINO's default"
    )
    inference_precision: Literal["f32", "bf16", "f16", "auto"] = Field(
        "auto",
        description="activation precision. auto: the plugin's choice, bf16 on CPUs with AVX512-BF16/AMX "
        "(2x+ f32's speed there; >= 95% top-1 agreement with fp32, the same capital-city answers, and the "
        "text after them may drift), else f32; f32 keeps transformers fp32's greedy replies token for token",
    )
    kv_cache_precision: Literal["f32", "f16", "bf16", "u8", "auto"] = Field(
        "auto", description="KV-cache element type; auto: the plugin's default (u8 on CPU)"
    )
    max_new_tokens: int = Field(128, gt=0, description="tokens to generate; max_tokens overrides it")
    context_length: int | None = Field(
        None,
        gt=0,
        description="prompt + reply tokens the model takes; null: the model's own (GGUF metadata or "
        "config.json max_position_embeddings). A longer prompt is refused",
    )
    cache_size_gb: float = Field(
        1.0, gt=0, description="KV-cache memory of the continuous-batching scheduler, in GB"
    )
    max_num_seqs: int = Field(64, gt=0, description="most sequences decoded together in one step")
    prompt_cache: bool = Field(
        True,
        description="reuse the KV blocks of a prompt prefix already computed (OpenVINO prefix caching): "
        "an agent's growing conversation, or a dataset's shared system prompt, is prefilled once",
    )
    tool_choice: Literal["auto", "required"] = Field(
        "required",
        description="with tools, when the call names no tool_choice: required (smolagents' default: an "
        "agent's step is a tool call) constrains the reply to one JSON call of a given tool (structured output); "
        "auto lets the model answer in text or call one",
    )
    chat_template: str | None = Field(None, description="a Jinja chat template replacing the model's")
    ov_config: dict[str, Any] = Field(
        default_factory=dict, description="extra OpenVINO plugin properties (e.g. PERFORMANCE_HINT)"
    )

    def gguf_path(self) -> Path | None:
        """The GGUF file ``model_id`` names, or None for a directory or Hub repo."""
        return gguf_ref(self.model_id)

    def is_directory(self) -> bool:
        return looks_like_path(self.model_id) and self.gguf_path() is None

    def problems(self) -> list[Problem]:
        out: list[Problem] = []
        try:
            path = self.gguf_path()
        except ConfigError as exc:
            return exc.problems
        if path is not None and not path.is_file():
            out.append(Problem("model_id", f"no such file: {str(path)!r}", "give the path of a .gguf file"))
        elif path is None and self.is_directory():
            d = Path(self.model_id).expanduser()
            if not d.is_dir():
                out.append(Problem("model_id", f"no such directory: {str(d)!r}", "give an OpenVINO IR dir"))
            elif not (d / "openvino_model.xml").is_file():
                out.append(
                    Problem(
                        "model_id",
                        f"{str(d)!r} has no openvino_model.xml (not an OpenVINO IR directory)",
                        "export it first (optimum-cli export openvino --model <dir> <out>), or give a "
                        "GGUF file, which is converted automatically",
                    )
                )
        for key in sorted(set(self.ov_config) & set(_OWNED)):
            out.append(Problem(f"ov_config.{key}", "is set by the adapter", f"use model.{_OWNED[key]}"))
        for key in sorted(set(self.generation_kwargs) - _SAMPLING - {"max_new_tokens"}):
            out.append(
                Problem(
                    f"generation_kwargs.{key}",
                    "is not an OpenVINO GenAI sampling parameter",
                    f"use one of {', '.join(sorted(_SAMPLING))} (temperature, top_p, max_tokens and seed "
                    "are model fields)",
                )
            )
        return out

    def cpu_threads(self) -> int:
        """Threads the CPU plugin can run: num_threads, capped by the CPUs this process may use."""
        cpus = usable_cpus()
        return min(self.num_threads or cpus, cpus)

    def activation_precision(self) -> str:
        """The INFERENCE_PRECISION_HINT to send ("auto": none). OpenVINO 2026.4's CPU plugin dies with
        SIGFPE building a bf16 pipeline on one thread (num_threads 1, or a one-CPU affinity; measured on a
        Xeon with AMX; openvinotoolkit/openvino#33300 reports it under `taskset -c 0`): there auto, which
        the plugin would turn into bf16, is sent as f32, and bf16 is refused (bf16_problem)."""
        if self.inference_precision == "auto" and self._on_one_cpu_thread():
            return "f32"
        return self.inference_precision

    def bf16_problem(self) -> Problem | None:
        """bf16 activations asked for where the plugin would crash the process (activation_precision)."""
        if self.inference_precision == "bf16" and self._on_one_cpu_thread():
            return Problem(
                "inference_precision",
                "bf16 on one CPU thread kills the process in OpenVINO's CPU plugin (SIGFPE while "
                "building the pipeline, openvinotoolkit/openvino#33300)",
                "use inference_precision: auto or f32 (auto is f32 here), or num_threads >= 2 on 2+ CPUs",
            )
        return None

    def _on_one_cpu_thread(self) -> bool:
        return "CPU" in self.device.upper() and self.cpu_threads() == 1

    def environment_problems(self) -> list[Problem]:
        bf16 = self.bf16_problem()
        return ([bf16] if bf16 else []) + self._missing_packages()

    def _missing_packages(self) -> list[Problem]:
        missing = [m for m in ("openvino", "openvino_genai") if importlib.util.find_spec(m) is None]
        if self.gguf_path() is not None and importlib.util.find_spec("gguf") is None:
            missing.append("gguf")
        if missing:
            return [
                Problem(
                    "_target_",
                    f"needs {', '.join(missing)}, which is not installed",
                    f"pip install 'modelfactory[{_EXTRA}]' (wheels, no build)",
                )
            ]
        return []

    def load_key(self) -> tuple[Any, ...]:
        """What identifies a loaded pipeline: the source and every load-time setting (not sampling)."""
        return (
            self.model_id,
            self.revision,
            self.weight_format,
            self.device,
            self.num_threads,
            self.inference_precision,
            self.kv_cache_precision,
            self.cache_size_gb,
            self.max_num_seqs,
            self.prompt_cache,
            json.dumps(self.ov_config, sort_keys=True, default=repr),
        )
