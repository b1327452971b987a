"""Prefix reuse of the KV cache between consecutive single-conversation calls of a local model.

An agent loop resends its whole, growing conversation on every step (smolagents' CodeAgent: a system
prompt of ~2k tokens, then each step's code and observation). Without reuse every step prefills all of it
again; with it, a call prefills only what follows the longest token prefix it shares with the previous
call's prompt *and reply*. Only the plain ``DynamicCache`` of full-attention layers is reused: sliding
window, linear-attention and static caches cannot be cut back to an arbitrary prefix, so those models
simply prefill in full.

torch-free on purpose: the cache objects come from ``generate`` and are only duck-typed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["PromptCache", "cache_kwarg", "common_prefix"]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token id sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _reusable(cache: Any) -> bool:
    """A ``DynamicCache`` whose every layer is a plain full-attention ``DynamicLayer`` (croppable anywhere)."""
    if type(cache).__name__ != "DynamicCache":
        return False
    layers = getattr(cache, "layers", None) or []
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)


def cache_kwarg(transformers_generation_utils: Any) -> str:
    """The name ``generate`` takes a cache under, and returns it under in its output: ``cache`` in
    transformers 5 (``past_key_values`` is deprecated there), ``past_key_values`` before."""
    output = getattr(transformers_generation_utils, "GenerateDecoderOnlyOutput", None)
    fields = getattr(output, "__dataclass_fields__", {})
    return "cache" if "cache" in fields else "past_key_values"


class PromptCache:
    """The KV cache left by the last single-row generation on one set of weights, and its token ids.

    Callers hold the generation lock. :meth:`take` hands the cache out *and forgets it*, so a generation
    that fails half-way (and leaves the cache half-written) can never be reused; :meth:`keep` stores the
    cache of a generation that completed.
    """

    def __init__(self) -> None:
        self._cache: Any = None
        self._ids: list[int] = []

    def take(self, ids: Sequence[int]) -> tuple[Any, int]:
        """The stored cache cut back to the longest prefix it shares with ``ids`` (at least one token of
        ``ids`` is left to feed, since ``generate`` needs the logits of the last one), and that prefix's
        length; ``(None, 0)`` when nothing is shared."""
        cache, stored = self._cache, self._ids
        self.clear()
        if cache is None:
            return None, 0
        shared = min(common_prefix(stored, ids), len(ids) - 1)
        if shared <= 0:
            return None, 0
        extra = cache.get_seq_length() - shared
        if extra > 0:
            cache.crop(-extra)  # negative: "remove this many" in transformers 4.56+ and 5
        return cache, shared

    def keep(self, cache: Any, sequence: Sequence[int]) -> None:
        """Store the cache ``generate`` returned for the row ``sequence`` (prompt + generated ids)."""
        if cache is None or not _reusable(cache):
            return
        n = cache.get_seq_length()  # the last generated token was never fed: n == len(sequence) - 1
        self._cache, self._ids = cache, [int(t) for t in sequence[:n]]

    def clear(self) -> None:
        self._cache, self._ids = None, []

    @property
    def tokens(self) -> int:
        """How many tokens the stored cache holds (0: none stored)."""
        return len(self._ids)
