"""Plain-text completions and embeddings of the local backends: what ``/v1/completions`` and
``/v1/embeddings`` of ``modelfactory serve`` answer with (lm-eval's ``local-completions`` scores a
task's choices from the prompt tokens' log-probabilities, ``echo`` + ``logprobs``).

The shapes are backend-neutral; each backend fills them (``TransformersModel.complete_text`` /
``.embed``, ``LlamaCppModel.complete_text`` / ``.embed``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import MessageError

__all__ = ["Embeddings", "TextCompletion", "TokenLogprobs", "cut_at_stop", "prompt_ids"]


@dataclass
class TokenLogprobs:
    """OpenAI's legacy completions ``logprobs`` object: per token its text, log-probability (None for
    the very first token of an echoed prompt: nothing predicts it), the ``top`` alternatives and the
    character offset of the token in the returned text."""

    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top_logprobs,
            "text_offset": self.text_offset,
        }


@dataclass
class TextCompletion:
    """One prompt's completion: its text (the prompt first when echoed), why it ended, token counts."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: TokenLogprobs | None = None


@dataclass
class Embeddings:
    """One vector per input, and the tokens read to make them."""

    vectors: list[list[float]]
    prompt_tokens: int


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to its earliest stop sequence, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def prompt_ids(
    prompt: str | Sequence[int], tokenize: Callable[[str], list[int]], vocab: int, what: str
) -> list[int]:
    """A prompt's token ids: a string through ``tokenize``, a list of ids as given (lm-eval sends its own
    tokenization), each checked to be in the vocabulary (``what`` names the field in the error)."""
    if isinstance(prompt, str):
        return tokenize(prompt)
    ids = list(prompt)
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab for i in ids):
        raise MessageError(f"{what}: token ids must be integers in [0, {vocab})")
    return ids
