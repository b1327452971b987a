"""Provider batch APIs (``runner.mode=batch``): OpenAI and Azure OpenAI Batch, Anthropic Message Batches.

Layout: ``base`` (the adapter interface, ``batches.json``), one module per provider (``openai``,
``anthropic``: SDKs and httpx imported only there), ``driver`` (submit, persist, poll, collect rows).
"""

from .base import BATCHES_FILE, BatchAdapter, BatchProgress, BatchRecord, BatchState, custom_id_for
from .driver import BatchOptions, adapter_for, run_batches

__all__ = [
    "BATCHES_FILE",
    "BatchAdapter",
    "BatchOptions",
    "BatchProgress",
    "BatchRecord",
    "BatchState",
    "adapter_for",
    "custom_id_for",
    "run_batches",
]
