"""What a provider's batch endpoint offers, in the same terms for every provider.

Declared here, below the backends, so that each backend can supply its own endpoint through
:meth:`~modelfactory.model.Model.batch_adapter` (OpenAI and Azure OpenAI Batch, Anthropic Message
Batches) while :mod:`modelfactory.batch` drives any of them without knowing a single backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .messages import ChatMessage, GenerationRequest

__all__ = ["BatchAdapter", "BatchProgress"]


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

    def submit(self, lines: list[dict[str, Any]], on_file: Callable[[str], None]) -> str:
        """Submit one batch; call ``on_file(file_id)`` as soon as an input file exists. Returns its id."""
        ...

    def progress(self, batch_id: str) -> BatchProgress: ...

    def results(self, batch_id: str) -> Iterator[tuple[str, ChatMessage | Exception]]:
        """``(custom_id, reply or error)`` for every request of an ended batch that has a result."""
        ...

    def cancel(self, batch_id: str) -> str:
        """Ask the provider to cancel; the status it answers."""
        ...
