"""Config -> model: ``build_model`` builds, ``validate_config`` only checks (no network, no weights),
``config_warnings`` says what works but should change."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from .aliases import alias_warnings
from .backends.registry import BACKENDS
from .errors import ConfigError, Problem, did_you_mean
from .model import Model

# BACKENDS (the registry's short names: what ``_target_`` may say, and the did-you-mean candidates for
# a wrong one) is re-exported from modelfactory.backends.registry, where backends are listed.
__all__ = ["BACKENDS", "build_model", "config_warnings", "locate_target", "model_node", "validate_config"]


def model_node(cfg: Any) -> Any:
    """Accept the model node itself or a whole app config that has a ``model`` node."""
    is_mapping = isinstance(cfg, Mapping) or hasattr(cfg, "keys")
    if is_mapping and "_target_" not in cfg and "model" in cfg:
        return cfg["model"]
    return cfg


def _resolve_items(node: Any, source: str) -> tuple[dict[str, Any], list[Problem]]:
    """Resolve interpolations key by key, so one missing env var does not hide the others."""
    problems: list[Problem] = []
    if type(node).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        if not OmegaConf.is_dict(node):
            return {}, [Problem("model", "expected a mapping with _target_, got a list", "", source)]

        out: dict[str, Any] = {}
        for key in node:
            try:
                value = node[key]
                out[str(key)] = (
                    OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
                )
            except OmegaConfBaseException as exc:
                msg = str(exc).splitlines()[0]
                fix = "set it, or override the key on the command line"
                if "Environment variable" in msg:
                    var = msg.split("'")[1] if "'" in msg else "the variable"
                    fix = f"export {var}=... before running"
                problems.append(Problem(str(key), msg, fix, source))
        return out, problems
    if not isinstance(node, Mapping):
        return {}, [
            Problem("model", f"expected a mapping with _target_, got {type(node).__name__}", "", source)
        ]
    return dict(node), problems


def locate_target(target: Any, source: str = "") -> tuple[Any, list[Problem]]:
    if not isinstance(target, str) or not target:
        return None, [
            Problem("_target_", "missing", f"set _target_ to one of {', '.join(sorted(BACKENDS))}", source)
        ]
    path = BACKENDS.get(target, target)
    module_name, _, attr = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr) if module_name else None
    except (ImportError, AttributeError):
        obj = None
    if obj is None:
        leaf = target.rpartition(".")[2]
        hint = did_you_mean(leaf, BACKENDS)
        return None, [
            Problem(
                "_target_",
                f"cannot import {target!r}" + (f", {hint}" if hint else ""),
                f"use one of: {', '.join('modelfactory.' + n for n in sorted(BACKENDS))}",
                source,
            )
        ]
    return obj, []


def _inspect(
    cfg: Any, source: str, overrides: dict[str, Any], check_spec: bool, environment: bool = False
) -> tuple[Any, dict[str, Any], list[Problem]]:
    """Target, kwargs and problems of a config. ``check_spec``: also validate kwargs against the spec."""
    node = model_node(cfg)
    data, problems = _resolve_items(node, source)
    target, target_problems = locate_target(data.pop("_target_", None), source)
    problems += target_problems
    kwargs = {k: v for k, v in data.items() if not k.startswith("_")}
    kwargs.update(overrides)
    if check_spec and isinstance(target, type) and issubclass(target, Model):
        bad = {p.key for p in problems}  # keys already reported (e.g. an unresolvable ${oc.env:...})
        try:
            spec = target.Spec.from_kwargs(kwargs, owner=target.__name__)
        except ConfigError as exc:
            problems += [
                Problem(p.key, p.problem, p.fix, source or p.source) for p in exc.problems if p.key not in bad
            ]
        else:
            if environment:
                problems += [
                    Problem(p.key, p.problem, p.fix, source or target.__name__)
                    for p in spec.environment_problems()
                ]
    return target, kwargs, problems


def validate_config(cfg: Any, *, source: str = "", environment: bool = False) -> list[Problem]:
    """Every problem in a model config, without building the model (no network, no weights).

    ``environment=True`` (what ``modelfactory check`` does) also reports what a call would still lack:
    a provider key the SDK would read from the environment, an SDK that is not installed.
    """
    return _inspect(cfg, source, {}, check_spec=True, environment=environment)[2]


def config_warnings(node: Mapping[str, Any] | Any, spec_cls: Any = None, source: str = "") -> list[Problem]:
    """What works in a model config but should change (what ``modelfactory check`` warns about):
    smolagents' names for our keys (:func:`modelfactory.aliases.alias_warnings`). ``spec_cls`` defaults
    to the one of the node's ``_target_``; a ``FallbackModel``'s member configs are checked too."""
    if spec_cls is None:
        target, _ = locate_target(node.get("_target_"), source)
        if not (isinstance(target, type) and issubclass(target, Model)):
            return []
        spec_cls = target.Spec
    out = alias_warnings(node, spec_cls, source)
    members = node.get("models") if "models" in spec_cls.model_fields else None
    if isinstance(members, Sequence) and not isinstance(members, str):
        for i, member in enumerate(members):
            if isinstance(member, Mapping) and "_target_" in member:
                out += [
                    Problem(f"models[{i}].{p.key}", p.problem, p.fix, source)
                    for p in config_warnings(member, source=source)
                ]
    return out


def build_model(cfg: Any, **overrides: Any) -> Model:
    """Build a ready model from a config node (or a whole app config); one ``ConfigError`` on problems."""
    target, kwargs, problems = _inspect(cfg, "", overrides, check_spec=False)
    if problems:  # report the kwargs' problems too, not just the first layer's
        raise ConfigError(_inspect(cfg, "", overrides, check_spec=True)[2])
    if isinstance(target, type) and issubclass(target, Model):
        return target(**kwargs)
    model = target(**kwargs)
    if not callable(model):
        raise ConfigError([Problem("_target_", f"{target!r} did not build a callable model")])
    return model  # type: ignore[no-any-return]
