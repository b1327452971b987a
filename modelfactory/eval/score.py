"""What a scorer is: a registered factory, a pydantic config per family, and the :class:`Score` it returns.

Inspect's shape: ``@scorer("exact", config=ExactConfig)`` registers a factory that takes the validated
config and returns ``score(reply, item) -> Score``. A config is plain data (``{"name": "pattern",
"pattern": "Answer: (\\w+)"}``), validated here into one :class:`~modelfactory.errors.ConfigError` that
names the key (:mod:`modelfactory.eval.scoring` builds them), so a bad regex or an unknown scorer fails
at ``check`` time, not on item 900. An error
(no reply, a judge that failed) is a :class:`Score` with ``error`` set: unscored, never a wrong answer.

A family registered with ``uses_logprobs=True`` (``choice``) is also handed the reply's per-token
log-probabilities (``ChatMessage.logprobs``, kept in the results row when the job asked for them:
``generation.logprobs=true``) as a third argument, ``None`` when the reply has none.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from ..messages import TokenLogprob

__all__ = ["Score", "Scorer", "ScorerConfig", "scorer", "targets_of"]


@dataclass
class Score:
    """One scorer's verdict on one reply. ``value`` is None exactly when ``error`` says why it is unscored."""

    value: float | None
    answer: str | None = None  # what the scorer read from the reply (the extracted answer)
    explanation: str = ""  # one line
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The row's JSON: every field, ``metadata`` (a deep copy) only when it holds something. Written out
        field by field: ``dataclasses.asdict`` took ~20 µs a score, most of a string scorer's cost per row."""
        out: dict[str, Any] = {
            "value": self.value,
            "answer": self.answer,
            "explanation": self.explanation,
            "error": self.error,
        }
        if self.metadata:
            out["metadata"] = copy.deepcopy(self.metadata)
        return out

    @classmethod
    def failed(cls, error: str, answer: str | None = None) -> Score:
        return cls(value=None, answer=answer, explanation=error, error=error)

    @property
    def scored(self) -> bool:
        return self.error is None and self.value is not None and not math.isnan(self.value)


class ScorerConfig(BaseModel):
    """Fields every scorer takes. ``label`` names its column in a results row (default: the name)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    label: str | None = None


ScoreFn = Callable[..., Score]  # score(reply, item), and the reply's logprobs for uses_logprobs families
C = TypeVar("C", bound=ScorerConfig)


@dataclass
class _Entry:
    config: type[ScorerConfig]
    factory: Callable[..., ScoreFn]
    needs_target: bool
    uses_logprobs: bool = False


_REGISTRY: dict[str, _Entry] = {}


def scorer(
    name: str, *, config: type[C], needs_target: bool = True, uses_logprobs: bool = False
) -> Callable[[Callable[..., ScoreFn]], Callable[..., ScoreFn]]:
    """Register ``factory(cfg, **context) -> score(reply, item)`` under ``name`` with its config class
    (``uses_logprobs``: ``score(reply, item, logprobs)``)."""

    def register(factory: Callable[..., ScoreFn]) -> Callable[..., ScoreFn]:
        _REGISTRY[name] = _Entry(config, factory, needs_target, uses_logprobs)
        return factory

    return register


@dataclass
class Scorer:
    """A built scorer: its config, and the function that scores one reply against one item."""

    config: ScorerConfig
    fn: ScoreFn
    needs_target: bool
    uses_logprobs: bool = False

    @property
    def label(self) -> str:
        return self.config.label or self.config.name

    def __call__(
        self, reply: str | None, item: Mapping[str, Any], logprobs: Sequence[Any] | None = None
    ) -> Score:
        """``logprobs``: the reply's per-token log-probabilities (``TokenLogprob`` objects, or their
        ``to_dict()`` form as a results row keeps them), passed on to a family that uses them."""
        if reply is None:
            return Score.failed("no reply (the model call failed): unscored")
        if self.needs_target and targets_of(item) is None:
            return Score.failed(f"item {item.get('id')!r} has no target")
        try:
            if self.uses_logprobs:
                return self.fn(reply, item, _token_logprobs(logprobs))
            return self.fn(reply, item)
        except Exception as exc:  # noqa: BLE001 - a scorer bug is an unscored item, not a crashed run
            return Score.failed(f"scorer {self.label} raised {type(exc).__name__}: {exc}")


def _token_logprobs(logprobs: Sequence[Any] | None) -> list[TokenLogprob] | None:
    """The reply's logprobs as :class:`TokenLogprob` objects (a results row holds their dicts); None when
    there are none."""
    if not logprobs:
        return None
    return [t if isinstance(t, TokenLogprob) else TokenLogprob.from_dict(t) for t in logprobs]


def targets_of(item: Mapping[str, Any]) -> list[str] | None:
    """The item's ``target`` as a list of strings (a string is a one-element list); None when absent."""
    target = item.get("target")
    if target is None:
        return None
    if isinstance(target, (list, tuple)):
        return [str(t) for t in target] if target else None
    return [str(target)]
