"""Stop sequences during generation, and streaming: what ends a row of ``generate`` and what a stream emits.

Both decode only the new tokens (of each row), so a stop spanning several tokens is caught and text of the
prompt is never matched; both emit or stop only on text the stop contract has settled: the one rule every
backend's stream follows, :func:`modelfactory.messages.settled_prefix`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any

from ...messages import ChatMessageStreamDelta, settled_prefix, trim_at_stop

__all__ = [
    "cancel_criteria",
    "criteria_list",
    "settled_streamer",
    "stop_criteria",
    "stop_state",
    "stream_generation",
]


# Its name here before the stop contract had one implementation (tests and users import it from here).
stop_state = settled_prefix


def stop_criteria(tokenizer: Any, prompt_len: int, stops: Sequence[Sequence[str]]) -> Any:
    """A ``StoppingCriteria`` that decodes only the new tokens of each row and stops a row once its
    reply is settled (``stops[i]`` are row ``i``'s stop sequences; a row without any never stops here)."""
    import torch
    from transformers import StoppingCriteria

    class StopOnText(StoppingCriteria):  # type: ignore[misc]
        def __init__(self) -> None:
            self.matched: list[str | None] = [None] * len(stops)
            self.done_at: list[int | None] = [None] * len(stops)  # new tokens when the row settled

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = []
            for i, row in enumerate(input_ids):
                if self.done_at[i] is not None or not stops[i]:
                    done.append(self.done_at[i] is not None)
                    continue
                text = tokenizer.decode(row[prompt_len:].tolist(), skip_special_tokens=True)
                n, final = settled_prefix(text, stops[i])
                if final:
                    self.matched[i] = next(s for s in stops[i] if text.startswith(s, n))
                    self.done_at[i] = input_ids.shape[1] - prompt_len
                done.append(final)
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopOnText()


def cancel_criteria(event: threading.Event) -> Any:
    import torch
    from transformers import StoppingCriteria

    class Cancelled(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full(
                (input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device
            )

    return Cancelled()


def criteria_list(*criteria: Any) -> Any:
    from transformers import StoppingCriteriaList

    return StoppingCriteriaList(list(criteria))


def settled_streamer(tokenizer: Any, stops: Sequence[str]) -> Any:
    """A ``TextIteratorStreamer`` whose pieces add up to exactly the non-streamed reply.

    The stock one flushes its cache at each newline and re-decodes from there, which drops the leading
    space of SentencePiece tokens. This one always decodes all new tokens, emits only text that
    :func:`~modelfactory.messages.settled_prefix` has settled (never a stop, nor text a stop may still
    claim), and holds back an incomplete UTF-8 character (decoded as U+FFFD) until its next byte arrives.
    """
    from transformers import TextIteratorStreamer

    class Streamer(TextIteratorStreamer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.text = ""
            self.finished = False

        def _emit_upto(self, n: int) -> None:
            if n > self.print_len:
                piece, self.print_len = self.text[self.print_len : n], n
                self.on_finalized_text(piece)

        def put(self, value: Any) -> None:
            if len(value.shape) > 1:
                value = value[0]
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            if self.finished:
                return
            self.token_cache.extend(value.tolist())
            self.text = str(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
            n, self.finished = settled_prefix(self.text, stops)
            self._emit_upto(n if self.finished else min(n, len(self.text.rstrip("\ufffd"))))

        def end(self) -> None:
            self.text = str(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
            self._emit_upto(len(trim_at_stop(self.text, stops)))
            self.on_finalized_text("", stream_end=True)

    return Streamer()


def stream_generation(
    run: Callable[[], Any], streamer: Any, cancel: threading.Event
) -> Generator[ChatMessageStreamDelta, None, Any]:
    """Runs ``run()`` (a ``generate`` that feeds ``streamer`` and stops when ``cancel`` is set) in a thread and
    yields the streamer's pieces as deltas; returns ``run()``'s output (``output = yield from ...``).

    Why a thread: ``generate`` only pushes tokens; the consumer pulls. A consumer that stops early (a closed
    HTTP stream) sets ``cancel``, which ends the generation; an error in ``generate`` unblocks the consumer
    and is raised there, in the caller's frame.
    """
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["output"] = run()
        except BaseException as exc:  # handed to the consumer below
            result["error"] = exc
            streamer.end()  # unblock the consumer

    thread = threading.Thread(target=work, name="modelfactory-generate", daemon=True)
    thread.start()
    try:
        for piece in streamer:
            if piece:
                yield ChatMessageStreamDelta(content=piece)
    finally:
        cancel.set()  # a consumer that stops early also stops the generation
        thread.join()
    if "error" in result:
        raise result["error"]
    return result["output"]
