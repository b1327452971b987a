"""The job spec: the one reader of the app's config (``runner``, ``output``, ``generation``,
``stop_sequences``, ``task``, ``tracking``, ``server``), every value checked before anything runs.

Why one model: the defaults are written here once (``conf/config.yaml`` documents them), a typo in a
``runner.*`` or ``output.*`` key is refused instead of ignored, and every wrong value becomes one
:class:`~modelfactory.errors.Problem` naming its key, all of them in one :class:`ConfigError` (exit 2).
Strict types on purpose: ``runner.fsync=null`` is not false, ``maybe`` is not true, ``poll_s=nan`` is no
interval.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from ..errors import ConfigError, Problem

__all__ = [
    "RENAMED",
    "JobSpec",
    "OutputSpec",
    "ProviderBatchSpec",
    "RunnerSpec",
    "empty_dir_overrides",
    "register_configs",
    "spec_problems",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ProviderBatchSpec(BaseModel):
    """``runner.provider_batch.*``: the provider's Batch API (OpenAI, Azure OpenAI, Anthropic,
    ``modelfactory serve``) at its batch price, instead of one online call per item."""

    model_config = _STRICT

    enabled: StrictBool = False
    poll_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)  # grows x1.5, up to 8x
    max_wait: float | None = Field(default=None, ge=0, allow_inf_nan=False)  # null: until they end
    on_missing: Literal["online", "error"] = "online"  # items a batch did not answer
    max_requests: StrictInt | None = Field(default=None, ge=1)  # per batch (null: the provider's limit)


class RunnerSpec(BaseModel):
    """``runner.*``: how a job runs its items (:func:`modelfactory.job.runner.run_items`)."""

    model_config = _STRICT

    concurrency: StrictInt = Field(default=8, ge=1)  # API models: requests in flight at once
    local_batch_size: StrictInt = Field(default=8, ge=1)  # local models' generate_batch: items per call
    retry_errors: StrictBool = True  # on resume, run errored items again
    progress: StrictBool = True
    fsync: StrictBool = True
    max_cost_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    provider_batch: ProviderBatchSpec = ProviderBatchSpec()


def _file_name(value: Any) -> str:
    if not isinstance(value, str) or Path(value).name in ("", ".", "..") or value.endswith(("/", os.sep)):
        raise ValueError(f"must be a file name, got {value!r}")
    return value


class OutputSpec(BaseModel):
    """``output.*``: what a job writes into its run dir."""

    model_config = _STRICT

    result_file: str = "result.json"  # single-prompt task: the run's result
    results_file: str = "results.jsonl"  # every task: one row per item; resume reads it
    print_reply: StrictBool = True

    @field_validator("result_file", "results_file", mode="before")
    @classmethod
    def _names(cls, value: Any) -> str:
        return _file_name(value)


# Old keys and what they are now: refused with the new name as the fix (issue 24: one meaning per "batch").
RENAMED = {
    "runner.batch_size": "runner.local_batch_size",
    "runner.batch": "runner.provider_batch",
    "runner.mode": "runner.provider_batch.enabled (true: the provider's Batch API)",
}


class JobSpec(BaseModel):
    """Everything a job reads from its config, checked all at once (:meth:`from_config`)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    model: Any
    generation: dict[str, Any] = {}  # per-call parameters, None values dropped
    stops: list[str] | None = None
    runner: RunnerSpec = RunnerSpec()
    output: OutputSpec = OutputSpec()
    task: dict[str, Any] | None = None  # read by job.items.task_items (prompt, dataset, humaneval; scorers)
    tracking: dict[str, Any] | None = None  # read by modelfactory.tracking
    server: dict[str, Any] | None = None  # read by modelfactory.serve.settings.ServerSettings

    @classmethod
    def from_config(cls, cfg: Any) -> JobSpec:
        """The spec of ``cfg`` (a ``DictConfig`` or a mapping shaped like ``conf/config.yaml``), or one
        :class:`ConfigError` listing every problem."""
        spec, problems = _read(cfg)
        if problems or spec is None:
            raise ConfigError(problems, title="invalid job config")
        return spec


def spec_problems(cfg: Any) -> list[Problem]:
    """Every problem :meth:`JobSpec.from_config` would refuse ``cfg`` for (none: it is fine)."""
    return _read(cfg)[1]


def _plain(node: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _read(cfg: Any) -> tuple[JobSpec | None, list[Problem]]:
    from ..generation import generation_problems

    problems: list[Problem] = []
    if cfg.get("model") is None:
        problems.append(Problem("model", "not set", "model=transformers_tiny (modelfactory list shows them)"))
    generation: dict[str, Any] = {}
    gen_node = _plain(cfg.get("generation"))
    if gen_node is not None and not isinstance(gen_node, Mapping):
        problems.append(Problem("generation", f"must be a mapping, got {gen_node!r}", "generation.seed=1"))
    elif gen_node is not None:  # null or removed (~generation): no per-call parameters
        generation = {str(k): v for k, v in gen_node.items() if v is not None}
        problems += generation_problems(generation)
        problems += _taken_generation_keys(generation)
    stops = _stops(_plain(cfg.get("stop_sequences")), problems)
    sections: dict[str, Any] = {}
    for name, model in (("runner", RunnerSpec), ("output", OutputSpec)):
        node = _plain(cfg.get(name)) if name in cfg else {}
        if not isinstance(node, Mapping):
            problems.append(Problem(name, f"must be a mapping, got {node!r}", f"remove the {name}= override"))
            continue
        if name == "runner":
            problems += _renamed(node)
            node = {k: v for k, v in node.items() if f"runner.{k}" not in RENAMED}
        try:
            sections[name] = model.model_validate(node)
        except ValidationError as exc:
            problems += _problems(exc, name, model)
    extra = {name: _plain(cfg.get(name)) for name in ("task", "tracking", "server") if name in cfg}
    for name, node in extra.items():
        if node is not None and not isinstance(node, Mapping):
            problems.append(
                Problem(name, f"must be a mapping, got {node!r}", f"{name}=<a config of {name}/>")
            )
    if problems:
        return None, problems
    spec = JobSpec(model=cfg.get("model"), generation=generation, stops=stops, **sections, **extra)
    return spec, []


def _renamed(runner: Mapping[str, Any]) -> list[Problem]:
    """Old ``runner`` keys, each refused with its new name."""
    return [
        Problem(old, f"was renamed to {new}", f"use {new.split(' ')[0]}")
        for old, new in RENAMED.items()
        if old.split(".", 1)[1] in runner
    ]


def _problems(exc: ValidationError, prefix: str, model: type[BaseModel]) -> list[Problem]:
    """Pydantic's errors as problems naming the config key, with the default as the fix."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join([prefix, *loc])
        if err["type"] == "extra_forbidden":
            known = _fields(model, loc[:-1])
            problems.append(Problem(key, "unknown key", f"one of {', '.join(known)}"))
            continue
        default = _default(model, loc)
        shown = "null" if default is None else str(default).lower() if isinstance(default, bool) else default
        message = str(err["msg"]).removeprefix("Value error, ")
        got = "" if "got " in message else f", got {err.get('input')!r}"
        problems.append(Problem(key, f"{message}{got}"[:300], f"{key}={shown}"))
    return problems


def _fields(model: type[BaseModel], path: list[str]) -> list[str]:
    for part in path:
        field = model.model_fields.get(part)
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _default(model: type[BaseModel], path: list[str]) -> Any:
    for part in path[:-1]:
        field = model.model_fields.get(part)
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    field = model.model_fields.get(path[-1]) if path else None
    return None if field is None else field.default


def _stops(value: Any, problems: list[Problem]) -> list[str] | None:
    """``stop_sequences``: one string is one stop (never split into characters), or a list of strings."""
    from .._overrides import unescape

    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    fix = '\'stop_sequences=["\\n\\n", "END"]\' or stop_sequences=END'
    if not isinstance(value, (list, tuple)):
        problems.append(
            Problem("stop_sequences", f"must be a string or a list of strings, got {value!r}", fix)
        )
        return None
    bad = [i for i, s in enumerate(value) if not isinstance(s, str) or s == ""]
    if bad:
        shown = ", ".join(f"[{i}]={value[i]!r}" for i in bad[:5])
        problems.append(Problem("stop_sequences", f"every stop must be a non-empty string: {shown}", fix))
        return None
    return list(dict.fromkeys(unescape(s) for s in value)) or None  # "\n" typed on the CLI


# ``generation.*`` names that are settings of their own, each with the key that sets it: passed on as
# per-call parameters they would clash with the runner's own keywords (a TypeError inside the run).
TAKEN = {
    "stop_sequences": "stop_sequences",
    "results_path": "output.results_file",
    "desc": "model",
    **{name: f"runner.{name}" for name in RunnerSpec.model_fields},
    "max_cost_usd": "runner.max_cost_usd",
}


def _taken_generation_keys(generation: Mapping[str, Any]) -> list[Problem]:
    return [
        Problem(
            f"generation.{key}", f"is not a generation parameter: it is set by {where}", f"use {where}=..."
        )
        for key, where in TAKEN.items()
        if key in generation
    ]


RUN_DIRS = ("hydra.run.dir", "hydra.sweep.dir")


def empty_dir_overrides(args: list[str]) -> list[Problem]:
    """``hydra.run.dir=`` / ``hydra.sweep.dir=''`` on the command line, refused before Hydra starts: by
    the time a job runs, Hydra has already written ``.hydra/`` and the job log into the current dir."""
    problems = []
    for arg in args:
        key, eq, value = arg.lstrip("+").partition("=")
        if eq and key in RUN_DIRS and not value.strip().strip("'\"").strip():
            problems.append(Problem(key, f"must be a directory path, got {value!r}", f"{key}=outputs/my_run"))
    return problems


SCHEMA = "job_spec"  # the ConfigStore node conf/config.yaml's defaults list starts with


def register_configs() -> None:
    """The spec's defaults as Hydra's ``job_spec`` config (ConfigStore), the first entry of
    ``conf/config.yaml``'s defaults list: the defaults are written here only, and ``runner.*`` /
    ``output.*`` keys exist in the composed config (a misspelt override fails at compose time).
    Called before every compose (``modelfactory run``, the CLI's commands); idempotent."""
    from hydra.core.config_store import ConfigStore

    node = {"runner": RunnerSpec().model_dump(), "output": OutputSpec().model_dump()}
    ConfigStore.instance().store(name=SCHEMA, node=node, provider="modelfactory")
