"""The run dir's record of submitted batches (and the adapter interface, from :mod:`modelfactory._batchapi`).

An adapter (each backend supplies its own: ``Model.batch_adapter()``) turns one prepared request into
one line of a provider batch, submits lines as one batch, reports a batch's progress, reads its results
back as replies or errors, and cancels it. The record
(``batches.json`` next to ``results.jsonl``) is written as soon as a file or batch id exists, so a run
that crashed or was interrupted, re-run into the same dir, polls the batches it already paid for.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The adapter interface lives below the backends, which implement it (Model.batch_adapter).
from .._batchapi import BatchAdapter, BatchProgress
from ..errors import DataError
from ..job.record import write_atomic

__all__ = ["BATCHES_FILE", "BatchAdapter", "BatchProgress", "BatchRecord", "BatchState", "custom_id_for"]

BATCHES_FILE = "batches.json"

_CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what every provider accepts (Anthropic's rule)


def custom_id_for(item_id: str) -> str:
    """The item id itself when every provider takes it as a ``custom_id``, else a stable digest of it."""
    if _CUSTOM_ID.match(item_id):
        return item_id
    import hashlib

    return "h-" + hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:40]


@dataclass
class BatchRecord:
    provider: str
    model_id: str
    items: dict[str, str]  # custom_id -> item id
    id: str | None = None  # None: the input file was uploaded but the batch was never created
    input_file_id: str | None = None
    submitted_at: float = field(default_factory=time.time)
    collected: bool = False  # every result of it written to results.jsonl
    token: str | None = None  # idempotency tag, saved before anything is sent (in the batch's metadata)
    after: str | None = None  # the provider's newest batch before this one (where it keeps no metadata)


@dataclass
class BatchState:
    """The run dir's ``batches.json`` (or an in-memory one when there is no run dir)."""

    path: Path | None
    batches: list[BatchRecord] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None) -> BatchState:
        if path is None or not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, [BatchRecord(**b) for b in data["batches"]])
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise DataError(
                f"{path} is unreadable ({type(exc).__name__}: {str(exc)[:200]}). It records the provider "
                "batches this run already paid for. Fix: restore it (each batch is also listed at the "
                "provider), or check them there, cancel what you do not want, and delete the file: its "
                "items are then submitted again on the next run."
            ) from exc

    def save(self) -> None:
        """Written whole, or not at all (:func:`~modelfactory.job.record.write_atomic`)."""
        if self.path is None:
            return
        data = {"version": 1, "batches": [asdict(b) for b in self.batches]}
        write_atomic(self.path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def running(self) -> list[BatchRecord]:
        return [b for b in self.batches if b.id is not None and not b.collected]
