"""Scorers from their configs, and scoring: what the runner and ``modelfactory score`` call.

``build_scorers(task.scorers)`` validates every scorer config at once (a :class:`ConfigError` naming each
key); ``check_targets`` says which items lack the target a scorer needs; ``score_row(scorers, item,
reply)`` is what each results row gains. Importing this module registers every scorer family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError, Problem, did_you_mean
from . import scorers as _families  # noqa: F401 - importing registers every family
from .score import _REGISTRY, Score, Scorer, ScorerConfig, targets_of
from .tasks import item_view, task_items

__all__ = [
    "build_scorer",
    "build_scorers",
    "check_targets",
    "registered",
    "score_many",
    "score_row",
    "task_problems",
]


def registered() -> list[str]:
    """The names of every registered scorer family."""
    return sorted(_REGISTRY)


def build_scorer(spec: Mapping[str, Any] | str, *, key: str = "scorer", **context: Any) -> Scorer:
    """A :class:`Scorer` from its config (a mapping with ``name``, or just the name); ``context`` passes
    objects a config cannot hold (``judge=`` a Model for ``model_graded``). Raises ConfigError naming
    ``key`` and the field."""
    if not isinstance(spec, (str, Mapping)):
        raise ConfigError(
            [Problem(key, f"must be a scorer name or a mapping with 'name', got {spec!r}", "e.g. includes")],
            title="invalid scorer",
        )
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
    return Scorer(config, entry.factory(config, **context), entry.needs_target, entry.uses_logprobs)


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


def score_row(
    scorers: Sequence[Scorer],
    item: Mapping[str, Any],
    reply: str | None,
    logprobs: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """What a results row gains: ``{"scores": {label: {value, answer, explanation, error}}}``;
    ``logprobs``: the reply's, for the scorers that use them (the row's ``logprobs``)."""
    return {"scores": {s.label: s(reply, item, logprobs).to_dict() for s in scorers}}


def score_many(
    scorer_: Scorer,
    pairs: Sequence[tuple[str | None, Mapping[str, Any]]],
    *,
    workers: int = 2,
    logprobs: Sequence[Sequence[Any] | None] | None = None,
) -> list[Score]:
    """Score many replies with ``workers`` threads (the code scorer's work runs in child processes, so
    threads are enough to keep that many cores busy). Order kept. ``logprobs``: each reply's, or None."""
    per_reply = list(logprobs) if logprobs is not None else [None] * len(pairs)
    triples = [(reply, item, lp) for (reply, item), lp in zip(pairs, per_reply, strict=True)]
    if workers <= 1 or len(triples) <= 1:
        return [scorer_(*t) for t in triples]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="score") as pool:
        return list(pool.map(lambda t: scorer_(*t), triples))


def task_problems(task: Mapping[str, Any], **context: Any) -> list[Problem]:
    """What ``modelfactory check`` reports of a task's scoring: every bad scorer config (a regex that does
    not compile, an unknown name, ...), and items without the target a scorer needs; [] when it has none."""
    specs = task.get("scorers")
    if not specs:
        return []
    try:
        built = build_scorers(specs, key="task.scorers", **context)
    except ConfigError as exc:
        return list(exc.problems)
    try:
        check_targets([item_view(i) for i in task_items(task)], built)
    except ConfigError as exc:
        return list(exc.problems)
    return []
