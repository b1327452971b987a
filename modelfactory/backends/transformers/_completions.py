"""Plain-text completions (no chat template), their log-probabilities, and embeddings on a loaded
transformers runtime: what ``modelfactory serve`` answers ``/v1/completions`` and ``/v1/embeddings``
with (:mod:`modelfactory.backends._completion`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import MessageError
from ...messages import TokenLogprob
from .._completion import Embeddings, TextCompletion, TokenLogprobs, cut_at_stop, prompt_ids
from ._weights import GENERATE_LOCK

__all__ = ["complete_text", "embed", "reply_logprobs"]


def _ids(tokenizer: Any, prompt: str | Sequence[int], what: str) -> list[int]:
    """A prompt's token ids: a string through the tokenizer (its own special tokens, as a completions
    server adds them), a list of ids as given."""
    return prompt_ids(
        prompt, lambda text: [int(i) for i in tokenizer(text)["input_ids"]], len(tokenizer), what
    )


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
    """Continue ``prompt`` by up to ``max_tokens`` tokens (0: score the prompt only). ``logprobs`` (the
    number of alternatives per token, 0 for none) asks for every returned token's log-probability under
    the model, computed from one forward pass over prompt + completion; ``echo`` returns the prompt too."""
    rt = model.runtime
    torch, tok = rt.torch, rt.tokenizer
    ids = _ids(tok, prompt, "prompt")
    if not ids:
        raise MessageError("prompt: empty (no tokens to continue)")
    context = model.context_length
    if context is not None and len(ids) + max_tokens > context:
        raise MessageError(
            f"prompt: {len(ids)} tokens + max_tokens {max_tokens} exceed the model's context of {context} tokens"
        )
    new: list[int] = []
    finish = "length"
    with GENERATE_LOCK, torch.inference_mode():
        if max_tokens > 0:
            do_sample = bool(temperature)
            kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": do_sample}
            if do_sample:
                kwargs["temperature"] = float(temperature or 1.0)
                if top_p is not None:
                    kwargs["top_p"] = float(top_p)
            input_ids = torch.tensor([ids], dtype=torch.long, device=rt.device)
            with torch.random.fork_rng(devices=[]):
                if seed is not None:
                    torch.manual_seed(seed)
                out = rt.model.generate(
                    input_ids, attention_mask=torch.ones_like(input_ids), pad_token_id=rt.pad_id, **kwargs
                )
            for t in out[0, len(ids) :].tolist():
                if int(t) in rt.eos_ids:
                    finish = "stop"
                    break
                new.append(int(t))
        text = tok.decode(new, skip_special_tokens=True)
        if stop:
            text, stopped = cut_at_stop(text, stop)
            if stopped:
                finish = "stop"
                while new and len(tok.decode(new, skip_special_tokens=True)) > len(text):
                    new.pop()  # the tokens of the stop (and after) are not part of the reply
        if max_tokens == 0:
            finish = "length"
        scored = _logprobs(model, ids, new, logprobs, echo) if logprobs is not None else None
    head = (prompt if isinstance(prompt, str) else tok.decode(ids)) if echo else ""
    return TextCompletion(
        text=head + text,
        finish_reason=finish,
        prompt_tokens=len(ids),
        completion_tokens=len(new),
        logprobs=scored,
    )


def _logprobs(model: Any, ids: list[int], new: list[int], top: int, echo: bool) -> TokenLogprobs:
    """Each returned token's log-probability given the tokens before it, with its ``top`` alternatives."""
    rt = model.runtime
    torch, tok = rt.torch, rt.tokenizer
    seq = ids + new
    logits = rt.model(torch.tensor([seq], dtype=torch.long, device=rt.device)).logits[0].float()
    lsm = torch.log_softmax(logits, dim=-1)
    first = 0 if echo else len(ids)
    out = TokenLogprobs()
    offset = 0
    for j in range(first, len(seq)):
        piece = tok.decode([seq[j]])
        out.tokens.append(piece)
        out.text_offset.append(offset)
        offset += len(piece)
        if j == 0:
            out.token_logprobs.append(None)
            out.top_logprobs.append(None)
            continue
        row = lsm[j - 1]
        out.token_logprobs.append(float(row[seq[j]]))
        if top > 0:
            values, indices = torch.topk(row, top)
            out.top_logprobs.append(
                {
                    tok.decode([int(i)]): float(v)
                    for v, i in zip(values.tolist(), indices.tolist(), strict=True)
                }
            )
        else:
            out.top_logprobs.append(None)
    return out


def embed(model: Any, inputs: Sequence[str | Sequence[int]]) -> Embeddings:
    """The mean of the last hidden state over each input's tokens: one vector per input."""
    rt = model.runtime
    torch, tok = rt.torch, rt.tokenizer
    vectors: list[list[float]] = []
    total = 0
    with GENERATE_LOCK, torch.inference_mode():
        for n, text in enumerate(inputs):
            ids = _ids(tok, text, f"input[{n}]")
            if not ids:
                raise MessageError(f"input[{n}]: empty (no tokens to embed)")
            context = model.context_length
            if context is not None and len(ids) > context:
                raise MessageError(f"input[{n}]: {len(ids)} tokens exceed the model's context of {context}")
            out = rt.model(torch.tensor([ids], dtype=torch.long, device=rt.device), output_hidden_states=True)
            vectors.append(out.hidden_states[-1][0].float().mean(dim=0).tolist())
            total += len(ids)
    return Embeddings(vectors=vectors, prompt_tokens=total)


def reply_logprobs(model: Any, prompt: str, new_ids: Sequence[int], top: int) -> list[TokenLogprob]:
    """A reply's ``ChatMessage.logprobs`` (a call with ``logprobs=True, top_logprobs=top``): each generated
    token (special tokens, such as the closing eos, left out as the reply's text leaves them out) with its
    log-probability given the templated ``prompt`` and the tokens before it, and its ``top`` alternatives,
    from one forward pass over prompt + reply."""
    rt = model.runtime
    torch, tok = rt.torch, rt.tokenizer
    ids = [int(i) for i in tok(prompt, add_special_tokens=False)["input_ids"]]
    seq = ids + [int(i) for i in new_ids]
    special = set(getattr(tok, "all_special_ids", []) or [])
    with GENERATE_LOCK, torch.inference_mode():
        logits = rt.model(torch.tensor([seq], dtype=torch.long, device=rt.device)).logits[0].float()
    lsm = torch.log_softmax(logits, dim=-1)
    out = []
    for j in range(len(ids), len(seq)):
        if seq[j] in special:
            continue
        row = lsm[j - 1]
        alternatives: list[tuple[str, float]] = []
        if top > 0:
            values, indices = torch.topk(row, top)
            alternatives = [
                (tok.decode([int(i)]), float(v))
                for v, i in zip(values.tolist(), indices.tolist(), strict=True)
            ]
        out.append(TokenLogprob(tok.decode([seq[j]]), float(row[seq[j]]), alternatives))
    return out
