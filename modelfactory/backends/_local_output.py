"""What the in-process backends make of the tokens they generate, written once: the text settled against
the stops as it grows (:class:`SettledText`), the end of a generation (:class:`Outcome`) and the reply or
stream deltas built from it, a batch row's error, the JSON schema a ``response_format`` asks for, and the
errors of their extra endpoints (completions, embeddings).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BackendError, MessageError, ModelFactoryError, UnsupportedFeatureError
from ..messages import (
    ChatMessage,
    ChatMessageStreamDelta,
    TokenLogprob,
    TokenUsage,
    settled_prefix,
    trim_at_stop,
)
from ..model import GenerationRequest, Model

__all__ = [
    "Outcome",
    "SettledText",
    "backend_errors",
    "last_outcome",
    "local_reply",
    "response_schema",
    "row_error",
    "row_stops",
    "stream_deltas",
]


class SettledText:
    """The text of one generation as it grows, and how much of it is settled: no stop can still claim it.

    :meth:`grow` takes the whole text so far and returns the newly settled piece; once a stop completes,
    ``matched`` names it and ``text`` ends before it. :meth:`end` cuts the held-back rest at its first stop.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = list(stops)
        self.text = ""
        self.emitted = 0
        self.matched: str | None = None

    def grow(self, text: str, settled: str | None = None) -> str:
        """``settled``: the part of ``text`` that may be emitted at all (e.g. without a character still
        incomplete); all of it by default."""
        settled = text if settled is None else settled
        start = self.emitted
        n, final = (
            settled_prefix(settled[start:], self.stops) if self.stops else (len(settled) - start, False)
        )
        self.emitted += n
        self.text = text
        if final:
            self.matched = next(s for s in self.stops if text.startswith(s, self.emitted))
            self.text = text[: self.emitted]
        return text[start : self.emitted]

    def end(self) -> tuple[str, bool]:
        """The text not emitted yet (cut at its first stop), and whether that cut found a stop."""
        cut_here = False
        if self.matched is None and self.stops:  # ended otherwise: the held-back text, cut at its first stop
            cut = trim_at_stop(self.text, self.stops)
            if len(cut) < len(self.text):
                self.matched = next(s for s in self.stops if self.text.startswith(s, len(cut)))
                cut_here = True
            self.text = cut
        rest = self.text[self.emitted :]
        self.emitted = len(self.text)
        return rest, cut_here


@dataclass
class Outcome:
    """The end of one generation: what a reply (or a stream's last delta) is built from."""

    text: str
    prompt: str
    prompt_tokens: int
    output_ids: list[int]
    finish_reason: str
    stop_sequence: str | None
    extra: dict[str, Any] = field(default_factory=dict)  # the backend's own fields of ``raw``
    logprobs: list[TokenLogprob] | None = None  # the reply tokens' log-probabilities, when the call asked

    def usage(self) -> TokenUsage:
        return TokenUsage(input_tokens=self.prompt_tokens, output_tokens=len(self.output_ids))


def local_reply(model: Model, outcome: Outcome, req: GenerationRequest) -> ChatMessage:
    """The reply: the text, its usage, and in ``raw`` the prompt, the token ids and how it ended. With
    tools, a JSON ``{"name": ..., "arguments": ...}`` in the text becomes a tool call; plain text stays
    content (smolagents then reports its own parsing error)."""
    reply = ChatMessage(
        role="assistant",
        content=outcome.text,
        token_usage=outcome.usage(),
        raw={
            "prompt": outcome.prompt,
            "generated_token_ids": outcome.output_ids,
            "finish_reason": outcome.finish_reason,
            "stop_sequence": outcome.stop_sequence,
            **outcome.extra,
        },
        logprobs=_covering(outcome.logprobs, outcome.text) if outcome.stop_sequence else outcome.logprobs,
    )
    if req.tools:
        with contextlib.suppress(BackendError):
            model.parse_tool_calls(reply)
    return reply


def _covering(logprobs: list[TokenLogprob] | None, text: str) -> list[TokenLogprob] | None:
    """The reply tokens that make up ``text`` (a reply cut at a stop sequence): the tokens generated after
    it, the stop's own included, are not part of the reply, so their log-probabilities are not either. A
    token that straddles the cut stays (it produced the reply's last characters)."""
    if logprobs is None:
        return None
    covered = 0
    for n, item in enumerate(logprobs):
        if covered >= len(text):
            return logprobs[:n]
        covered += len(item.token)
    return logprobs


def last_outcome(items: Iterable[str | Outcome]) -> Outcome:
    """The outcome a decoding ends with (its text pieces read and dropped)."""
    outcome = None
    for item in items:
        if isinstance(item, Outcome):
            outcome = item
    assert outcome is not None
    return outcome


def stream_deltas(items: Iterable[str | Outcome]) -> Iterator[ChatMessageStreamDelta]:
    """A decoding's settled text pieces as deltas, then its usage."""
    for item in items:
        if isinstance(item, Outcome):
            yield ChatMessageStreamDelta(token_usage=item.usage())
        elif item:
            yield ChatMessageStreamDelta(content=item)


def row_stops(stop_sequences: Any, n: int) -> list[Any]:
    """The stops of each of ``n`` rows of a batch: ``stop_sequences`` is one list for every row, or one list
    (or ``None``) per row."""
    if stop_sequences is not None and not isinstance(stop_sequences, str):
        stop_list = list(stop_sequences)
        if stop_list and all(s is None or not isinstance(s, str) for s in stop_list):
            if len(stop_list) != n:
                raise MessageError(f"stop_sequences has {len(stop_list)} lists for {n} conversations")
            return stop_list
    return [stop_sequences] * n


def row_error(model: Model, exc: Exception, index: int) -> Exception:
    """The error of one conversation of a batch, naming it."""
    if isinstance(exc, (MessageError, UnsupportedFeatureError)) and type(exc).__init__ in (
        MessageError.__init__,
        UnsupportedFeatureError.__init__,
    ):
        return type(exc)(f"conversations[{index}]: {exc}")
    if isinstance(exc, ModelFactoryError):
        return exc
    return model._backend_error(exc)


@contextlib.contextmanager
def backend_errors(model: Model) -> Iterator[None]:
    """Our own errors as they are; anything else as the model's ``BackendError``."""
    try:
        yield
    except ModelFactoryError:
        raise
    except Exception as exc:
        raise model._backend_error(exc) from exc


def response_schema(response_format: Any, owner: str) -> Any:
    """The JSON schema a ``response_format`` asks for: a dict, True for any JSON object, None for text."""
    if not isinstance(response_format, dict):
        raise MessageError(f"response_format must be a dict, got {type(response_format).__name__}")
    kind = response_format.get("type")
    if kind == "json_schema":
        inner = response_format.get("json_schema") or {}
        schema = inner.get("schema") if isinstance(inner, dict) else None
        if not isinstance(schema, dict):
            raise MessageError("response_format json_schema: missing json_schema.schema")
        return schema
    if kind == "json_object":
        return response_format.get("schema") or True
    if kind == "text":
        return None
    raise MessageError(f"response_format type {kind!r}: {owner} takes json_schema, json_object or text")
