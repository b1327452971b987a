"""Moved to :mod:`modelfactory.backends.transformers._prompt_cache`; this path keeps old imports working."""

from .transformers._prompt_cache import PromptCache, cache_kwarg, common_prefix

__all__ = ["PromptCache", "cache_kwarg", "common_prefix"]
