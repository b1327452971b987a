"""What a provider's batch endpoint offers, in the same terms for every provider.

Declared here, below the backends, so that each backend can supply its own endpoint through
:meth:`~modelfactory.model.Model.batch_adapter` (OpenAI and Azure OpenAI Batch, Anthropic Message
Batches) while :mod:`modelfactory.batch` drives any of them without knowing a single backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .messages import ChatMessage, GenerationRequest

__all__ = ["CLOCK_SKEW_S", "CRASH_ENV", "BatchAdapter", "BatchProgress", "Mark", "crash_point"]

CRASH_ENV = "MODELFACTORY_BATCH_CRASH_AT"  # tests: the submission step at which the process dies
CLOCK_SKEW_S = 600.0  # how far the provider's clock may be behind ours when find() looks back


@dataclass
class Mark:
    """Where a submission started: our clock (epoch seconds) and the provider's newest batch then."""

    since: float
    after: str | None = None


def crash_point(step: str) -> None:
    """Die at once (as ``kill -9`` would: no clean-up, no flush) when :data:`CRASH_ENV` names ``step``.

    Placed at each step of a batch submission (``before_submit``, ``after_upload``, ``after_upload_record``,
    ``after_create``, ``after_record``), so a test proves, on the real code path, that a run killed there
    and resumed submits every item at most once."""
    if os.environ.get(CRASH_ENV) == step:
        os._exit(137)


@dataclass
class BatchProgress:
    """A batch's state at the provider, in the same terms for every provider."""

    ended: bool  # no request of it will change any more (completed, failed, expired, cancelled)
    status: str  # the provider's own word
    total: int
    done: int  # succeeded
    failed: int  # errored (expired and cancelled ones count in `expired`)
    expired: int = 0
    message: str | None = None  # why a whole batch failed (validation), if it did


class BatchAdapter(Protocol):
    """One provider's batch endpoint, reached with one model's client and credentials."""

    provider: str
    max_requests: int  # per batch
    max_bytes: int  # per batch (the uploaded file or the request body)

    def line(self, custom_id: str, req: GenerationRequest) -> dict[str, Any]:
        """One request of a batch, as the provider documents it."""
        ...

    def submit(
        self, lines: list[dict[str, Any]], on_file: Callable[[str], None], token: str, file_id: str | None
    ) -> str:
        """Submit one batch; call ``on_file(file_id)`` as soon as an input file exists. Returns its id.
        ``token``: this submission's idempotency tag, attached to the batch where the provider keeps
        metadata (:meth:`find` looks for it); ``file_id``: an input file uploaded by an earlier try of
        the same submission, used instead of uploading ``lines`` again."""
        ...

    def find_file(self, token: str, mark: Mark) -> str | None:
        """An input file an earlier try of the submission uploaded (named after ``token``) but did not
        record, to be used instead of uploading again; None when there is none, when the provider keeps
        no files, or cannot list them (the lines are uploaded again: an upload is not billed)."""
        ...

    def newest(self) -> str | None:
        """Where :meth:`find` cannot match a token: the provider's newest batch id now, recorded before
        a submission so that ``find`` looks only at batches created after it (None: no need, or none)."""
        ...

    def find(
        self, token: str | None, mark: Mark, requests: int, file_id: str | None, known: set[str]
    ) -> str | None:
        """The batch an earlier try of a submission created, if any (the run was killed before it
        recorded the id): tagged with ``token``, or created from ``file_id``; where the provider keeps
        neither, the batch of ``requests`` requests created after ``mark`` and not among ``known``.
        Raises when the provider cannot be asked: never guess "none"."""
        ...

    def progress(self, batch_id: str) -> BatchProgress: ...

    def results(self, batch_id: str) -> Iterator[tuple[str, ChatMessage | Exception]]:
        """``(custom_id, reply or error)`` for every request of an ended batch that has a result."""
        ...

    def cancel(self, batch_id: str) -> str:
        """Ask the provider to cancel; the status it answers."""
        ...
