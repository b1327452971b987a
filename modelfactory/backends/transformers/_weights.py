"""The process-wide weight cache: models built with the same weight-cache key share one loaded copy.

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

from ._gguf import GgufWeights
from ._prompt_cache import PromptCache

__all__ = [
    "GENERATE_LOCK",
    "Runtime",
    "acquire",
    "cached",
    "cached_models",
    "clear_cache",
    "discard",
]


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


_CACHE: dict[tuple[Any, ...], Runtime] = {}
_CACHE_LOCK = threading.Lock()
_KEY_LOCKS: dict[tuple[Any, ...], threading.Lock] = {}
# One generation at a time in the process: a seeded call reseeds torch's *global* RNG (which ``generate``
# samples from), and torch already uses every core for one call. Concurrency comes from batching.
GENERATE_LOCK = threading.RLock()


def acquire(key: tuple[Any, ...], load: Any) -> Runtime:
    """The cached runtime for ``key``, or the one ``load()`` builds (once, however many threads ask)."""
    with _CACHE_LOCK:
        rt = _CACHE.get(key)
        if rt is not None:
            return rt
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:  # two threads building the same model load it once
        with _CACHE_LOCK:
            rt = _CACHE.get(key)
        if rt is None:
            rt = load()
            with _CACHE_LOCK:
                _CACHE[key] = rt
        return rt


def cached(key: tuple[Any, ...]) -> Runtime | None:
    """The runtime loaded for ``key``, if any (loads nothing)."""
    with _CACHE_LOCK:
        return _CACHE.get(key)


def discard(rt: Runtime) -> None:
    """Release ``rt``'s weights and drop it from the cache (the caller holds :data:`GENERATE_LOCK`)."""
    with _CACHE_LOCK:
        if _CACHE.get(rt.key) is rt:
            del _CACHE[rt.key]
    _release([rt])


def _release(rts: Sequence[Runtime]) -> None:
    """Drop the weights of ``rts`` (under the generation lock: no call is using them)."""
    cuda = False
    for rt in rts:
        cuda = cuda or getattr(rt.device, "type", "") == "cuda"
        rt.freed = True
        rt.model = None
        rt.prompt_cache.clear()
    gc.collect()
    if cuda:
        with contextlib.suppress(Exception):
            import torch

            torch.cuda.empty_cache()


def clear_cache() -> int:
    """Free every cached model's weights; returns how many were freed. Models reload on their next call."""
    with GENERATE_LOCK:
        with _CACHE_LOCK:
            rts = list(_CACHE.values())
            _CACHE.clear()
            _KEY_LOCKS.clear()
        _release(rts)
    return len(rts)


def cached_models() -> list[dict[str, Any]]:
    """What the weight cache holds: one dict per loaded model (source, revision, dtype, device, gguf_file)."""
    with _CACHE_LOCK:
        return [
            {
                "source": k[0],
                "revision": k[1],
                "dtype": str(rt.dtype).replace("torch.", ""),
                "device": str(rt.device),
                "gguf_file": k[6],
            }
            for k, rt in _CACHE.items()
        ]
