"""Plain-text completions (no chat template), their log-probabilities, and embeddings on a loaded
llama.cpp model: what ``modelfactory serve`` answers ``/v1/completions`` and ``/v1/embeddings`` with
(:mod:`modelfactory.backends._completion`).

Also the log-probabilities of a chat reply's tokens (``model(messages, logprobs=True)``:
:func:`reply_logprobs`), read from the logits the generation itself computed.

llama.cpp keeps every position's logits only when loaded with ``logits_all`` and makes embeddings only
with ``embedding``: both are load settings (``model.model_kwargs``), so a model loaded without them
refuses logprobs / embeddings with the setting to add, rather than answering without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import MessageError, UnsupportedFeatureError
from ...messages import TokenLogprob
from .._completion import Embeddings, TextCompletion, TokenLogprobs, prompt_ids

__all__ = ["check_logits", "complete_text", "embed", "reply_logprobs"]


def _ids(llama: Any, prompt: str | Sequence[int], what: str) -> list[int]:
    def tokenize(text: str) -> list[int]:
        return [int(t) for t in llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)]

    return prompt_ids(prompt, tokenize, llama.n_vocab(), what)


def complete_text(
    model: Any,
    prompt: str | Sequence[int],
    *,
    max_tokens: int = 16,
    stop: list[str] | None = None,
    echo: bool = False,
    logprobs: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> TextCompletion:
    """Continue ``prompt`` by up to ``max_tokens`` tokens (0: score the prompt only), as
    ``Llama.create_completion`` does, greedy unless ``temperature`` > 0."""
    rt = model.runtime
    with rt.lock:
        llama = rt.llama
        ids = _checked_ids(llama, prompt, max_tokens, logprobs)
        head = (prompt if isinstance(prompt, str) else _text(llama, ids)) if echo else ""
        if max_tokens == 0:  # create_completion takes 0 as "no limit": the prompt is scored here
            scored = _prompt_logprobs(llama, ids, logprobs) if logprobs is not None and echo else None
            if logprobs is not None and not echo:
                scored = TokenLogprobs()
            return TextCompletion(head, "length", len(ids), 0, scored)
        llama.reset()  # a completion shares no prefix with the chat calls' kept state
        out = llama.create_completion(
            prompt=ids,
            max_tokens=max_tokens,
            stop=stop or None,
            echo=False,
            logprobs=logprobs,
            temperature=float(temperature or 0.0),
            top_p=1.0 if top_p is None else float(top_p),
            seed=seed,
            repeat_penalty=1.0,
        )
        llama.reset()
        choice = out["choices"][0]
        scored = None
        if logprobs is not None:
            scored = _prompt_logprobs(llama, ids, logprobs) if echo else TokenLogprobs()
            _add_logprobs(scored, choice.get("logprobs"), len(head))
        usage = out.get("usage") or {}
        return TextCompletion(
            text=head + choice["text"],
            finish_reason=choice.get("finish_reason") or "length",
            prompt_tokens=len(ids),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            logprobs=scored,
        )


def _checked_ids(llama: Any, prompt: str | Sequence[int], max_tokens: int, logprobs: int | None) -> list[int]:
    """The prompt's ids, refused when logprobs are asked of a model that keeps no logits, or when the
    prompt is empty or leaves no room for ``max_tokens``."""
    if logprobs is not None:
        check_logits(llama)
    ids = _ids(llama, prompt, "prompt")
    if not ids:
        raise MessageError("prompt: empty (no tokens to continue)")
    if len(ids) + max_tokens > llama.n_ctx():
        raise MessageError(
            f"prompt: {len(ids)} tokens + max_tokens {max_tokens} exceed the context window "
            f"(model.n_ctx) of {llama.n_ctx()}"
        )
    return ids


def check_logits(llama: Any) -> None:
    """Refuses logprobs (:class:`UnsupportedFeatureError`, naming the load setting) when ``llama`` keeps
    the logits of its last position only."""
    if not llama._logits_all:
        raise UnsupportedFeatureError(
            "logprobs: this LlamaCppModel keeps the last position's logits only; load it with "
            "model.model_kwargs={logits_all: true} (n_ctx x vocabulary floats of memory)"
        )


def _add_logprobs(scored: TokenLogprobs, lp: Any, offset: int) -> None:
    """llama.cpp's logprobs of the completion's tokens, after ``scored`` (the prompt's, when echoed);
    ``offset``: where the completion starts in the returned text."""
    if not lp:
        return
    for piece in lp["tokens"]:
        scored.text_offset.append(offset)
        offset += len(piece)
    scored.tokens += lp["tokens"]
    # numpy float32s in llama-cpp-python's dicts: plain floats for JSON
    scored.token_logprobs += [None if x is None else float(x) for x in lp["token_logprobs"]]
    scored.top_logprobs += [
        None if t is None else {k: float(v) for k, v in t.items()} for t in lp["top_logprobs"]
    ]


def _text(llama: Any, ids: list[int]) -> str:
    return str(llama.detokenize(ids).decode("utf-8", errors="replace"))


def _scored(llama: Any, row: Any, token: int, top: int) -> tuple[float, list[tuple[str, float]]]:
    """``token``'s log-probability under one position's logits ``row``, and the ``top`` most likely
    tokens there (text, log-probability), most likely first."""
    import numpy as np

    row = np.asarray(row, dtype=np.float64)
    peak = row.max()
    lsm = row - (peak + np.log(np.exp(row - peak).sum()))
    best: Any = np.argsort(-lsm)[:top] if top > 0 else []
    return float(lsm[token]), [(_text(llama, [int(i)]), float(lsm[i])) for i in best]


def _prompt_logprobs(llama: Any, ids: list[int], top: int) -> TokenLogprobs:
    """Each prompt token's log-probability given those before it (None for the first), from llama.cpp's
    logits at every position (``logits_all``)."""
    llama.reset()
    llama.eval(ids)
    scores = llama.scores[: len(ids)]
    llama.reset()
    out = TokenLogprobs()
    offset = 0
    for j, tok in enumerate(ids):
        piece = _text(llama, [tok])
        out.tokens.append(piece)
        out.text_offset.append(offset)
        offset += len(piece)
        if j == 0:
            out.token_logprobs.append(None)
            out.top_logprobs.append(None)
            continue
        logprob, alternatives = _scored(llama, scores[j - 1], tok, top)
        out.token_logprobs.append(logprob)
        out.top_logprobs.append(dict(alternatives) if top > 0 else None)
    return out


def reply_logprobs(llama: Any, prompt_tokens: int, new_ids: Sequence[int], top: int) -> list[TokenLogprob]:
    """A reply's ``ChatMessage.logprobs`` (a call with ``logprobs=True, top_logprobs=top``), right after
    ``Llama.generate`` produced ``new_ids`` after a prompt of ``prompt_tokens`` (the caller still holds
    the lock): reply token ``j`` was sampled from the logits at position ``prompt_tokens - 1 + j``, which
    that generation evaluated (a reused prompt prefix ends before them), so they are read, not computed
    again. Needs ``logits_all`` (:func:`check_logits`)."""
    scores = llama.scores
    return [
        TokenLogprob(_text(llama, [tok]), *_scored(llama, scores[prompt_tokens - 1 + j], tok, top))
        for j, tok in enumerate(new_ids)
    ]


def embed(model: Any, inputs: Sequence[str | Sequence[int]]) -> Embeddings:
    """llama.cpp's embedding of each input (``Llama.embed``), mean-pooled over tokens where the GGUF pools none."""
    rt = model.runtime
    with rt.lock:
        llama = rt.llama
        if not llama.context_params.embeddings:
            raise UnsupportedFeatureError(
                "embeddings: this LlamaCppModel was loaded for generation; load it with "
                "model.model_kwargs={embedding: true}"
            )
        texts = [
            t if isinstance(t, str) else _text(llama, _ids(llama, t, f"input[{n}]"))
            for n, t in enumerate(inputs)
        ]
        vectors, total = [], 0
        for text in texts:  # one at a time: in one batch, llama.cpp's per-token outputs mix inputs
            llama.reset()
            out, count = llama.embed(text, return_count=True)
            vectors.append(_pooled(out))
            total += int(count)
        llama.reset()
    return Embeddings(vectors=vectors, prompt_tokens=total)


def _pooled(vector: Any) -> list[float]:
    """A pooled vector as is; per-token vectors (a causal LM's GGUF pools nothing) mean-pooled, as
    TransformersModel.embed pools its last hidden state."""
    if vector and isinstance(vector[0], (list, tuple)):
        width = len(vector[0])
        return [sum(float(tok[i]) for tok in vector) / len(vector) for i in range(width)]
    return [float(x) for x in vector]
