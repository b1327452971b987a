"""Provider batch APIs (``runner.provider_batch``): OpenAI and Azure OpenAI Batch, Anthropic Message Batches.

Layout: ``base`` (``batches.json``; the adapter interface is :mod:`modelfactory._batchapi`, and each
backend supplies its own adapter: ``Model.batch_adapter()``), ``driver`` (submit, persist, poll, collect
rows), ``manage`` (``modelfactory batches list|cancel``) and ``sweep`` (a multirun submits every job's
batches, then waits for all of them together; imported by Hydra as a callback, never from here).
"""

from .base import BATCHES_FILE, BatchAdapter, BatchProgress, BatchRecord, BatchState, custom_id_for
from .driver import BatchGroup, BatchOptions, adapter_for, interrupted_note, run_batches, wait_all

__all__ = [
    "BATCHES_FILE",
    "BatchAdapter",
    "BatchGroup",
    "BatchOptions",
    "BatchProgress",
    "BatchRecord",
    "BatchState",
    "adapter_for",
    "custom_id_for",
    "interrupted_note",
    "run_batches",
    "wait_all",
]
