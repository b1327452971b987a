"""Real constructor signatures for the model classes, built from their specs (the one source of truth).

``TransformersModel("HuggingFaceTB/SmolLM-135M-Instruct", dtype="float32")``: the main argument
(``model_id``; ``fn`` for ``CallableModel``, ``models`` for ``FallbackModel``: a spec's
``main_argument``) may be positional, every other key is keyword-only, as the spec declares it.

Why ``__signature__`` plus a generated docstring, and no hand-written ``__init__`` per class: the spec's
fields are what the constructor validates, so a signature derived from them cannot drift from it.
``inspect.signature``, ``help()``, IPython/Jupyter completion and tools such as hydra-zen read
``__signature__``. A static checker (pyright, mypy) reads the source instead and sees ``*args, **kwargs``:
giving it the names would mean writing every field a second time (a ``.pyi`` per backend, or a
``TYPE_CHECKING`` ``__init__``), the duplication this module exists to avoid.

Positional arguments are bound here, not by Python: one too many is a :class:`ConfigError` listing it
together with every other problem of the call, never a bare ``TypeError``.
"""

from __future__ import annotations

import functools
import inspect
import operator
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from .errors import ConfigError, Problem

__all__ = ["SpecSignature", "bind_arguments", "document", "main_argument", "signature_of"]


def main_argument(spec_cls: Any) -> str:
    """The one key a model class takes positionally."""
    return str(getattr(spec_cls, "main_argument", "model_id"))


def _envs(info: Any) -> list[str]:
    extra = info.json_schema_extra
    env = extra.get("env") if isinstance(extra, Mapping) else None
    return [str(e) for e in env] if isinstance(env, list) else []


def _user_type(annotation: Any) -> Any:
    """The type a caller passes: a secret is a plain ``str`` to them (the spec wraps it)."""
    if annotation is SecretStr:
        return str
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, [_user_type(a) for a in typing.get_args(annotation)])
    return annotation


def _ordered_fields(spec_cls: Any) -> list[str]:
    """The backend's own fields first (the most derived class's first, deprecated ones last), then the
    ones every model (or every API model) shares."""
    from .settings import ApiSpec, ModelSpec

    fields = spec_cls.model_fields
    shared = set(ModelSpec.model_fields) | set(ApiSpec.model_fields)
    own: list[str] = []
    for klass in spec_cls.__mro__:
        if klass in (ApiSpec, ModelSpec):
            break
        own += [n for n in getattr(klass, "__annotations__", {}) if n in fields and n not in own]
    own = [n for n in own if n not in shared]
    own.sort(key=lambda n: (fields[n].description or "").startswith("deprecated"))
    return own + [n for n in fields if n in shared]


def _parameter(name: str, info: Any, kind: Any) -> inspect.Parameter:
    annotation = _user_type(info.annotation)
    default = info.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):  # retry, cache: None means "the default policy" (and reads well)
        default, annotation = None, annotation | None
    if default is PydanticUndefined:
        default = inspect.Parameter.empty
        if _envs(info):  # required, but the environment may supply it
            default = None
            annotation = annotation | None
    return inspect.Parameter(name, kind, default=default, annotation=annotation)


def signature_of(model_cls: type) -> inspect.Signature:
    """``model_cls``'s constructor signature (without ``self``), from ``model_cls.Spec``."""
    spec_cls: Any = getattr(model_cls, "Spec", None)
    fields = getattr(spec_cls, "model_fields", None)
    if not fields:
        return inspect.Signature([inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])
    main = main_argument(spec_cls)
    params = []
    if main in fields:
        params.append(_parameter(main, fields[main], inspect.Parameter.POSITIONAL_OR_KEYWORD))
    params += [
        _parameter(name, fields[name], inspect.Parameter.KEYWORD_ONLY)
        for name in _ordered_fields(spec_cls)
        if name != main
    ]
    return inspect.Signature(params)


class SpecSignature:
    """``Cls.__signature__``: the constructor's signature built from ``Cls.Spec`` (each subclass its own).

    On an instance it is absent, so ``inspect.signature(model)`` still shows the call (``__call__``).
    """

    def __get__(self, obj: Any, owner: type) -> inspect.Signature:
        if obj is not None:
            raise AttributeError("__signature__")
        return signature_of(owner)


def bind_arguments(model_cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the positional main argument bound to its name. A wrong call is a ConfigError
    listing every problem of it (the spec's own too), so one run shows all there is to fix."""
    if not args:
        return kwargs
    spec_cls: Any = model_cls.Spec  # type: ignore[attr-defined]
    main = main_argument(spec_cls)
    name = model_cls.__name__
    problems = []
    if len(args) > 1:
        problems.append(
            Problem(
                "positional arguments",
                f"{name} takes 1 positional argument ({main}) but {len(args)} were given",
                f"pass the others by name, e.g. {name}({main}, api_base=...); see help({name})",
            )
        )
    if main in kwargs:
        problems.append(Problem(main, "given both positionally and by name", "give it once"))
    bound = {main: args[0], **kwargs}
    if problems:
        try:
            spec_cls.from_kwargs(bound, owner=name)
        except ConfigError as exc:
            problems += exc.problems
        raise ConfigError(problems, title=f"invalid {name} config")
    return bound


def document(model_cls: type) -> None:
    """Append the constructor's arguments (from the spec) and the smolagents names it also takes to the
    class docstring, so ``help()`` and IDE hovers show them."""
    spec_cls: Any = getattr(model_cls, "Spec", None)
    fields = getattr(spec_cls, "model_fields", None)
    doc = model_cls.__dict__.get("__doc__")
    if not fields or not doc:
        return
    from .aliases import aliases_for

    lines = ["", "", f"Arguments (validated by ``{spec_cls.__name__}``; every problem in one ConfigError):"]
    for param in signature_of(model_cls).parameters.values():
        info = fields[param.name]
        head = f"    {param.name}: {inspect.formatannotation(param.annotation)}"
        if param.default is not inspect.Parameter.empty:
            head += f" = {param.default!r}"
        lines.append(head)
        text = info.description or ""
        envs = _envs(info)
        if envs:
            text += ("; " if text else "") + f"env {' / '.join(envs)}"
        if text:
            lines.append(f"        {text}")
    table = aliases_for(spec_cls)
    renamed = [
        f"{k} -> {a.target}"
        for k, a in table.items()
        if a.target and a.target != k and k not in fields and not a.target.startswith("generation_kwargs.")
    ]
    refused = [k for k, a in table.items() if a.target is None]
    lines.append("")
    if renamed:
        lines.append("Also accepted (smolagents' names): " + ", ".join(renamed) + ".")
    lines.append(
        "Generation parameters smolagents forwards from **kwargs (frequency_penalty, top_k, ...) go to "
        "generation_kwargs."
    )
    if refused:
        lines += ["Refused with a ConfigError saying why: " + ", ".join(refused) + "."]
    model_cls.__doc__ = inspect.cleandoc(doc) + "\n".join(lines)
