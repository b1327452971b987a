"""Generation parameters (``temperature``, ``max_tokens``, ``top_p``, ``seed``) checked in one place.

The app (``generation.*``), the runner (per-call kwargs) and ``modelfactory serve`` (request fields) all
call :func:`validate_generation`, so ``temperature=hot`` or ``seed=2**70`` is refused the same way
everywhere, every problem at once, before anything reaches a provider or a local model (which would
otherwise accept ``temperature=-1`` or NaN silently, or overflow on a huge seed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError, Problem

__all__ = ["SEED_MAX", "SEED_MIN", "TEMPERATURE_MAX", "generation_problems", "validate_generation"]

TEMPERATURE_MAX = 2.0  # OpenAI's upper bound; providers with a lower one say so themselves
SEED_MIN = -(2**63)  # what torch.manual_seed and the providers' 64-bit seeds accept
SEED_MAX = 2**64 - 1


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def generation_problems(params: Mapping[str, Any], prefix: str = "generation") -> list[Problem]:
    """Every problem with the known generation parameters in ``params`` (others are left to the model)."""
    where = f"{prefix}." if prefix else ""
    problems: list[Problem] = []

    def bad(key: str, problem: str, fix: str) -> None:
        problems.append(Problem(f"{where}{key}", f"{problem}, got {params[key]!r}"[:300], fix))

    for key in ("temperature",):
        v = params.get(key)
        if v is not None and not (_number(v) and math.isfinite(v) and 0 <= v <= TEMPERATURE_MAX):
            bad(
                key,
                f"must be a number from 0 to {TEMPERATURE_MAX:g}",
                f"{where}{key}=0.7 (null: the model's)",
            )
    v = params.get("top_p")
    if v is not None and not (_number(v) and math.isfinite(v) and 0 < v <= 1):
        bad("top_p", "must be a number in (0, 1]", f"{where}top_p=0.9 (null: the model's)")
    for key in ("max_tokens", "max_new_tokens", "max_completion_tokens"):
        v = params.get(key)
        if v is not None and not (_integer(v) and v > 0):
            bad(key, "must be a positive integer", f"{where}{key}=256 (null: the model's)")
    v = params.get("seed")
    if v is not None and not (_integer(v) and SEED_MIN <= v <= SEED_MAX):
        bad("seed", "must be an integer that fits in 64 bits", f"{where}seed=42 (null: no seed)")
    return problems


def validate_generation(params: Mapping[str, Any], prefix: str = "generation") -> dict[str, Any]:
    """``params`` without its ``None`` values, or a :class:`ConfigError` naming every bad key."""
    problems = generation_problems(params, prefix)
    if problems:
        raise ConfigError(problems, title="invalid generation parameters")
    return {str(k): v for k, v in params.items() if v is not None}
