"""What a scorer is: a registered factory, a pydantic config per family, and the :class:`Score` it returns.

Inspect's shape: ``@scorer("exact", config=ExactConfig)`` registers a factory that takes the validated
config and returns ``score(reply, item) -> Score``. A config is plain data (``{"name": "pattern",
"pattern": "Answer: (\\w+)"}``), validated here into one :class:`~modelfactory.errors.ConfigError` that
names the key, so a bad regex or an unknown scorer fails at ``check`` time, not on item 900. An error
(no reply, a judge that failed) is a :class:`Score` with ``error`` set: unscored, never a wrong answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ConfigError, Problem, did_you_mean

__all__ = [
    "Score",
    "Scorer",
    "ScorerConfig",
    "build_scorer",
    "build_scorers",
    "check_targets",
    "registered",
    "score_many",
    "score_row",
    "scorer",
    "targets_of",
]


@dataclass
class Score:
    """One scorer's verdict on one reply. ``value`` is None exactly when ``error`` says why it is unscored."""

    value: float | None
    answer: str | None = None  # what the scorer read from the reply (the extracted answer)
    explanation: str = ""  # one line
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if not out["metadata"]:
            del out["metadata"]
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


ScoreFn = Callable[[str | None, Mapping[str, Any]], Score]
C = TypeVar("C", bound=ScorerConfig)


@dataclass
class _Entry:
    config: type[ScorerConfig]
    factory: Callable[..., ScoreFn]
    needs_target: bool


_REGISTRY: dict[str, _Entry] = {}


def scorer(
    name: str, *, config: type[C], needs_target: bool = True
) -> Callable[[Callable[..., ScoreFn]], Callable[..., ScoreFn]]:
    """Register ``factory(cfg, **context) -> score(reply, item)`` under ``name`` with its config class."""

    def register(factory: Callable[..., ScoreFn]) -> Callable[..., ScoreFn]:
        _REGISTRY[name] = _Entry(config, factory, needs_target)
        return factory

    return register


def registered() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def _load_families() -> None:
    from . import scorers  # noqa: F401 - importing registers every family


@dataclass
class Scorer:
    """A built scorer: its config, and the function that scores one reply against one item."""

    config: ScorerConfig
    fn: ScoreFn
    needs_target: bool

    @property
    def label(self) -> str:
        return self.config.label or self.config.name

    def __call__(self, reply: str | None, item: Mapping[str, Any]) -> Score:
        if reply is None:
            return Score.failed("no reply (the model call failed): unscored")
        if self.needs_target and targets_of(item) is None:
            return Score.failed(f"item {item.get('id')!r} has no target")
        try:
            return self.fn(reply, item)
        except Exception as exc:  # noqa: BLE001 - a scorer bug is an unscored item, not a crashed run
            return Score.failed(f"scorer {self.label} raised {type(exc).__name__}: {exc}")


def targets_of(item: Mapping[str, Any]) -> list[str] | None:
    """The item's ``target`` as a list of strings (a string is a one-element list); None when absent."""
    target = item.get("target")
    if target is None:
        return None
    if isinstance(target, (list, tuple)):
        return [str(t) for t in target] if target else None
    return [str(target)]


def build_scorer(spec: Mapping[str, Any] | str, *, key: str = "scorer", **context: Any) -> Scorer:
    """A :class:`Scorer` from its config (a mapping with ``name``, or just the name); ``context`` passes
    objects a config cannot hold (``judge=`` a Model for ``model_graded``). Raises ConfigError naming
    ``key`` and the field."""
    _load_families()
    data: dict[str, Any] = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = data.get("name")
    if not isinstance(name, str) or name not in _REGISTRY:
        hint = did_you_mean(str(name), _REGISTRY) if isinstance(name, str) else ""
        raise ConfigError(
            [
                Problem(
                    f"{key}.name",
                    f"unknown scorer {name!r}" if name is not None else "missing the scorer's name",
                    (hint + " " if hint else "") + "one of: " + ", ".join(sorted(_REGISTRY)),
                )
            ],
            title="invalid scorer",
        )
    entry = _REGISTRY[name]
    try:
        config = entry.config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field_name = ".".join(str(p) for p in err["loc"]) or "name"
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(Problem(f"{key}.{field_name}", message, _fix_for(entry.config, field_name)))
        raise ConfigError(problems, title=f"invalid scorer {name!r}") from None
    return Scorer(config, entry.factory(config, **context), entry.needs_target)


def _fix_for(config: type[ScorerConfig], field_name: str) -> str:
    info = config.model_fields.get(field_name)
    if info is None:
        return "fields: " + ", ".join(config.model_fields)
    return info.description or ""


def build_scorers(
    specs: Sequence[Mapping[str, Any] | str] | Mapping[str, Any] | str | None,
    *,
    key: str = "scorers",
    **context: Any,
) -> list[Scorer]:
    """Every scorer of a task (one config or a list), all problems reported at once; labels unique."""
    if specs is None:
        return []
    if isinstance(specs, (str, Mapping)):
        specs = [specs]
    built: list[Scorer] = []
    problems: list[Problem] = []
    for i, spec in enumerate(specs):
        try:
            built.append(build_scorer(spec, key=f"{key}[{i}]" if len(specs) > 1 else key, **context))
        except ConfigError as exc:
            problems += exc.problems
    labels = [s.label for s in built]
    for label in sorted({x for x in labels if labels.count(x) > 1}):
        problems.append(Problem(key, f"two scorers are labelled {label!r}", "give one a label: label=..."))
    if problems:
        raise ConfigError(problems, title="invalid scorers")
    return built


def check_targets(
    items: Sequence[Mapping[str, Any]], scorers: Sequence[Scorer], *, key: str = "task"
) -> None:
    """A task whose scorers need targets: every item has one (the ones that do not are named)."""
    if not any(s.needs_target for s in scorers):
        return
    missing = [str(item.get("id")) for item in items if targets_of(item) is None]
    if not missing:
        return
    needing = ", ".join(s.label for s in scorers if s.needs_target)
    if len(missing) == len(items):
        raise ConfigError(
            [
                Problem(
                    key,
                    f"no item has a 'target', and the scorers {needing} need one",
                    'add "target": "..." to each item',
                )
            ],
            title="task without targets",
        )
    shown = ", ".join(repr(m) for m in missing[:10]) + (
        f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    )
    raise ConfigError(
        [
            Problem(
                f"{key} item {shown}", f"no 'target' (needed by {needing})", 'add "target": "..." to the item'
            )
        ],
        title="items without targets",
    )


def score_row(scorers: Sequence[Scorer], item: Mapping[str, Any], reply: str | None) -> dict[str, Any]:
    """What a results row gains: ``{"scores": {label: {value, answer, explanation, error}}}``."""
    return {"scores": {s.label: s(reply, item).to_dict() for s in scorers}}


def score_many(
    scorer_: Scorer, pairs: Sequence[tuple[str | None, Mapping[str, Any]]], *, workers: int = 2
) -> list[Score]:
    """Score many replies with ``workers`` threads (the code scorer's work runs in child processes, so
    threads are enough to keep that many cores busy). Order kept."""
    if workers <= 1 or len(pairs) <= 1:
        return [scorer_(reply, item) for reply, item in pairs]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="score") as pool:
        return list(pool.map(lambda p: scorer_(p[0], p[1]), pairs))
