"""PromptCache: which prefix of the last call's KV cache a new prompt may reuse (real transformers caches)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from modelfactory.backends._prompt_cache import PromptCache, cache_kwarg, common_prefix  # noqa: E402

ids = st.lists(st.integers(0, 5), max_size=30)


@given(ids, ids)
def test_common_prefix_is_the_longest_shared_start(a: list[int], b: list[int]) -> None:
    n = common_prefix(a, b)
    assert a[:n] == b[:n]
    assert n == min(len(a), len(b)) or a[n] != b[n]
    assert common_prefix(b, a) == n


def _dynamic(tokens: int, layers: int = 2) -> object:
    cache = transformers.DynamicCache()
    for layer in range(layers):
        kv = torch.arange(tokens, dtype=torch.float32).reshape(1, 1, tokens, 1)
        cache.update(kv, kv.clone(), layer)
    return cache


@given(st.lists(st.integers(0, 3), min_size=2, max_size=20), st.lists(st.integers(0, 3), max_size=20))
def test_take_cuts_the_cache_to_the_shared_prefix_and_leaves_a_token_to_feed(
    sequence: list[int], suffix: list[int]
) -> None:
    pc = PromptCache()
    pc.keep(_dynamic(len(sequence) - 1), sequence)  # generate's cache: every token but the last one
    assert pc.tokens == len(sequence) - 1
    prompt = sequence[: len(sequence) // 2] + suffix
    cache, shared = pc.take(prompt)
    expected = min(common_prefix(sequence[:-1], prompt), len(prompt) - 1)
    assert shared == max(expected, 0)
    if shared:
        assert cache.get_seq_length() == shared
        keys = cache.layers[1].keys
        assert keys.flatten().tolist() == list(range(shared))  # the *first* tokens are kept
    else:
        assert cache is None
    assert pc.tokens == 0  # handed out and forgotten: a failed generation can never leave it behind
    assert pc.take(prompt) == (None, 0)


def test_caches_that_cannot_be_cut_anywhere_are_not_kept() -> None:
    config = transformers.LlamaConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1
    )
    pc = PromptCache()
    pc.keep(transformers.StaticCache(config=config, max_cache_len=16), [1, 2, 3])
    assert pc.tokens == 0
    pc.keep(None, [1, 2, 3])
    assert pc.tokens == 0


def test_cache_kwarg_follows_the_installed_transformers() -> None:
    from transformers.generation import utils

    name = cache_kwarg(utils)
    fields = utils.GenerateDecoderOnlyOutput.__dataclass_fields__
    assert name == ("cache" if "cache" in fields else "past_key_values")
    assert name in fields
