"""``modelfactory batches list|cancel <run dir>``: the batches a run submitted (its ``batches.json``),
their state at the provider, and cancelling the ones still running (an interrupted run leaves them
running, already paid for). The provider is reached with the run's own model config
(``<run dir>/.hydra/config.yaml``; keys come from the environment, as for the run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, Problem
from .base import BATCHES_FILE, BatchState

__all__ = ["cancel_batches", "list_batches"]


def _load(run_dir: Path) -> tuple[BatchState, Path]:
    path = run_dir / BATCHES_FILE
    if not path.is_file():
        raise ConfigError(
            [
                Problem(
                    "run dir",
                    f"no {BATCHES_FILE} in {run_dir}",
                    "give the dir of a runner.provider_batch run",
                )
            ],
            title="modelfactory batches",
        )
    return BatchState.load(path), path


def _adapter(run_dir: Path) -> Any:
    from omegaconf import OmegaConf

    from ..factory import build_model
    from .driver import adapter_for

    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(
            [Problem("run dir", f"no .hydra/config.yaml in {run_dir}", "give the dir run.py wrote")],
            title="modelfactory batches",
        )
    return adapter_for(build_model(OmegaConf.load(saved).model))


def list_batches(run_dir: Path, *, query: bool = True) -> list[str]:
    """One line per batch: id, provider, requests, collected or its state at the provider."""
    state, _ = _load(run_dir)
    adapter = _adapter(run_dir) if query and state.running() else None
    lines = []
    for rec in state.batches:
        unrecorded = "(no batch id recorded: the next run into this dir looks it up at the provider)"
        where = f"{rec.provider} {rec.id or unrecorded}"
        if rec.collected:
            status = "collected"
        elif rec.id is None or adapter is None:
            status = "pending"
        else:
            p = adapter.progress(rec.id)
            status = f"{p.status}: {p.done} done, {p.failed} failed, {p.expired} expired of {p.total}"
        lines.append(f"{where}  {len(rec.items)} requests  {status}")
    return lines


def cancel_batches(run_dir: Path) -> list[str]:
    """Cancel every batch of the run not yet collected; a re-run then sends its items again."""
    state, _ = _load(run_dir)
    running = state.running()
    if not running:
        return ["no running batch"]
    adapter = _adapter(run_dir)
    lines = []
    for rec in running:
        assert rec.id is not None
        lines.append(f"{rec.id}: {adapter.cancel(rec.id)}")
        rec.collected = True  # its items are no longer waited for: a re-run submits them anew
    state.save()
    return lines
