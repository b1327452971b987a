"""The transformers runtime and its process-wide weight cache (:class:`~.._local.WeightCache`): models
built with the same weight-cache key share one loaded copy.

A sweep over generation parameters (or several configs naming one model) loads the weights once;
:func:`clear_cache` / ``TransformersModel.free`` release them. It also owns the one generation lock.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._local import WeightCache
from ._gguf import GgufWeights
from ._prompt_cache import PromptCache

__all__ = ["GENERATE_LOCK", "WEIGHTS", "Runtime", "cached_models", "clear_cache"]


@dataclass(eq=False)
class Runtime:
    """A loaded tokenizer and model, shared by every model object with the same ``key``."""

    torch: Any
    tokenizer: Any
    model: Any  # None once freed
    device: Any
    dtype: Any
    eos_ids: frozenset[int]
    pad_id: int | None
    key: tuple[Any, ...]
    dtype_reason: str = ""
    load_s: float = 0.0
    freed: bool = False
    # the KV cache of the last single-conversation call, and the name generate() takes it under
    prompt_cache: PromptCache = field(default_factory=PromptCache)
    cache_kwarg: str = "past_key_values"
    gguf: GgufWeights | None = None  # for a GGUF model: the file, and whether this load converted it
    chars_per_token: int = 0  # the tokenizer's longest piece (_local.longest_token); 0: not read yet
    processor: Any = None  # a vision-language model's AutoProcessor (its prompts carry images)


# One generation at a time in the process: a seeded call reseeds torch's *global* RNG (which ``generate``
# samples from), and torch already uses every core for one call. Concurrency comes from batching.
GENERATE_LOCK = threading.RLock()


def _release(rt: Runtime) -> None:
    """Drop the weights of ``rt`` (under the generation lock: no call is using them)."""
    with GENERATE_LOCK:
        rt.freed = True
        rt.model = None
        rt.prompt_cache.clear()


def _collect(rts: Sequence[Runtime]) -> None:
    """Give the memory of released weights back: once for all of them (and CUDA's cached blocks)."""
    gc.collect()
    if any(getattr(rt.device, "type", "") == "cuda" for rt in rts):
        with contextlib.suppress(Exception):
            import torch

            torch.cuda.empty_cache()


WEIGHTS: WeightCache[Runtime] = WeightCache(_release, _collect)


def clear_cache() -> int:
    """Free every cached model's weights; returns how many were freed. Models reload on their next call."""
    return WEIGHTS.clear()


def cached_models() -> list[dict[str, Any]]:
    """What the weight cache holds: one dict per loaded model (source, revision, dtype, device, gguf_file)."""
    return [
        {
            "source": k[0],
            "revision": k[1],
            "dtype": str(rt.dtype).replace("torch.", ""),
            "device": str(rt.device),
            "gguf_file": k[6],
        }
        for k, rt in WEIGHTS.items()
    ]
