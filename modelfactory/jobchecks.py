"""The app's own settings checked before a job runs: each wrong value a :class:`Problem` naming its key.

Small pure functions, called by ``app._job_config``, ``BatchOptions.from_config`` and ``run.py``, so
that ``runner.fsync=null`` or ``runner.retry_errors=maybe`` (a string, truthy), ``runner.batch.poll_s=nan``,
``hydra.run.dir=''`` (the current directory, silently) or ``+generation.stop_sequences=`` (an internal
``TypeError``) are refused with the key, the problem and the fix, exit code 2. One pydantic job spec will take these over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import Problem

__all__ = ["empty_dir_overrides", "flag", "generation_key_problems", "number"]

RUN_DIRS = ("hydra.run.dir", "hydra.sweep.dir")


def flag(section: Mapping[str, Any], prefix: str, key: str, default: bool, problems: list[Problem]) -> bool:
    """``section[key]`` as a bool: only ``true`` or ``false`` (YAML's), never a string or null."""
    value = section.get(key, default)
    if isinstance(value, bool):
        return value
    problems.append(
        Problem(
            f"{prefix}.{key}",
            f"must be true or false, got {value!r}",
            f"{prefix}.{key}={str(default).lower()}",
        )
    )
    return default


def generation_key_problems(generation: Mapping[str, Any], taken: Mapping[str, str]) -> list[Problem]:
    """``generation.*`` keys that are not per-call parameters but settings of their own (``taken``:
    name -> the key to use instead), e.g. ``generation.stop_sequences`` (the top-level
    ``stop_sequences``) or ``generation.concurrency`` (``runner.concurrency``)."""
    return [
        Problem(
            f"generation.{key}", f"is not a generation parameter: it is set by {where}", f"use {where}=..."
        )
        for key, where in taken.items()
        if key in generation
    ]


def number(
    value: Any, key: str, problems: list[Problem], *, low: float, above: bool, fix: str, optional: bool
) -> float | None:
    """A finite number ``> low`` (``above``) or ``>= low``; null when ``optional``."""
    if value is None and optional:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > low if above else value >= low):
        return float(value)
    bound = f"> {low:g}" if above else f">= {low:g}"
    null = " or null" if optional else ""
    problems.append(Problem(key, f"must be a finite number {bound}{null}, got {value!r}", fix))
    return None


def empty_dir_overrides(args: list[str]) -> list[Problem]:
    """``hydra.run.dir=`` / ``hydra.sweep.dir=''`` on the command line, refused before Hydra starts: by
    the time a job runs, Hydra has already written ``.hydra/`` and the job log into the current dir."""
    problems = []
    for arg in args:
        key, eq, value = arg.lstrip("+").partition("=")
        if eq and key in RUN_DIRS and not value.strip().strip("'\"").strip():
            problems.append(Problem(key, f"must be a directory path, got {value!r}", f"{key}=outputs/my_run"))
    return problems
