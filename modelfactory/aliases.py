"""smolagents' constructor names, accepted where they mean what one of ours means.

Why: replacing ``from smolagents import X`` with ``from modelfactory import X`` must run unchanged, so
every name smolagents' model constructors take (``device_map``, ``torch_dtype``, ``api_key`` on
``InferenceClientModel``, ``retry=False``, generation kwargs such as ``frequency_penalty``...) is either
turned into our canonical key here, or refused with a :class:`~modelfactory.errors.Problem` saying what
it would have meant and what to write instead. Nothing is silently dropped but a value that asks for
exactly what we do anyway (``client=None``, ``tool_name_key="name"``).

One table per spec class: the entries shared by every model are :data:`COMMON` (plus :data:`API` for
the remote backends), each backend's own are in :data:`BY_SPEC` (or an ``aliases`` ClassVar on a spec). Configs keep the
canonical names: ``modelfactory check`` warns on an alias (:func:`alias_warnings`, through
:func:`modelfactory.factory.config_warnings`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import Problem, did_you_mean

__all__ = [
    "API",
    "BY_SPEC",
    "COMMON",
    "GENERATION_PARAMS",
    "Alias",
    "alias_warnings",
    "aliases_for",
    "refused",
    "resolve",
]


@dataclass(frozen=True)
class Alias:
    """Another name for one of our keys, or (``target=None``) a name we refuse with a reason.

    ``target`` may be dotted (``client_kwargs.organization``): the value then lands in that dict field.
    ``convert`` turns smolagents' value into ours and raises ``ValueError`` (its message is the problem)
    for a value we cannot honour; a target equal to the name itself only converts (``retry=False``).
    ``keep``: values of a refused name that ask for nothing we lack (smolagents' defaults): dropped.
    """

    target: str | None
    note: str
    convert: Callable[[Any], Any] | None = None
    keep: tuple[Any, ...] = ()
    fix: str = ""


def refused(note: str, fix: str, keep: tuple[Any, ...] = ()) -> Alias:
    return Alias(None, note, keep=keep, fix=fix)


def _retry_flag(value: Any) -> Any:
    """smolagents' ``retry: bool`` (retry rate limits or not) as our retry policy; a policy passes."""
    if value is True:
        return {}  # the default policy
    if value is False:
        return {"max_attempts": 1}
    return value


# Generation parameters smolagents forwards from ``**kwargs`` to every completion call: here they go to
# ``generation_kwargs`` (a per-call kwarg still overrides them). A closed list, so a typo stays an error.
GENERATION_PARAMS = frozenset(
    {
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "verbosity",
        "service_tier",
        "metadata",
        "store",
        "max_completion_tokens",
        "top_k",
        "min_p",
        "typical_p",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "num_beams",
        "length_penalty",
        "min_new_tokens",
    }
)

_PER_CALL = "pass it to each call instead: model(messages, {name}=...)"

COMMON: dict[str, Alias] = {
    **{
        name: Alias(f"generation_kwargs.{name}", "a generation parameter sent with every call")
        for name in sorted(GENERATION_PARAMS)
    },
    "retry": Alias(
        "retry", "smolagents' retry=True/False: the default policy / a single attempt", _retry_flag
    ),
    "tool_name_key": refused(
        "the key of a tool call's name in JSON a model writes as text; only 'name' is parsed",
        "remove it (or keep the default 'name')",
        keep=("name",),
    ),
    "tool_arguments_key": refused(
        "the key of a tool call's arguments in JSON a model writes as text; only 'arguments' is parsed",
        "remove it (or keep the default 'arguments')",
        keep=("arguments",),
    ),
    "stop": refused("stop sequences for every call", _PER_CALL.format(name="stop_sequences")),
    "response_format": refused("a response format for every call", _PER_CALL.format(name="response_format")),
    "tools": refused("tools for every call", _PER_CALL.format(name="tools_to_call_from")),
}

API: dict[str, Alias] = {
    "client": refused(
        "a pre-built SDK client; the model builds its own on first use (one per event loop for asyncio, "
        "with the SDK's retries off so they never stack on the model's retry policy)",
        "remove it and give the client's settings as client_kwargs (e.g. http_client for a custom "
        "transport) or as the model's own keys (api_base, api_key, timeout)",
        keep=(None,),
    ),
}


_DEVICES = "auto, cpu, cuda, cuda:N or mps"
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _device_map(value: Any) -> Any:
    """transformers' ``device_map`` as our one ``device``: a device name, a CUDA index or torch.device."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"cuda:{value}"
    if type(value).__name__ == "device":  # torch.device, without importing torch
        return str(value)
    if isinstance(value, str) and value in ("balanced", "balanced_low_0", "sequential"):
        raise ValueError(
            f"device_map={value!r} spreads the model over several devices (accelerate), which is not "
            f"supported; give one device: {_DEVICES}"
        )
    if isinstance(value, Mapping):
        raise ValueError(f"a per-module device_map is not supported; give one device: {_DEVICES}")
    return value


def _torch_dtype(value: Any) -> Any:
    """``torch.float16`` or ``"float16"`` as our ``dtype`` name."""
    name = str(value).removeprefix("torch.")
    name = {"half": "float16", "float": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(name, name)
    if name not in _DTYPES:
        raise ValueError(f"torch_dtype={value!r} is not supported; give one of {', '.join(_DTYPES)}")
    return name


# Each backend's own names, by spec class name (looked up along the spec's MRO, so the table needs no
# import of the backends and their SDKs).
BY_SPEC: dict[str, dict[str, Alias]] = {
    "TransformersSpec": {
        "device_map": Alias("device", "one device for the whole model", _device_map),
        "torch_dtype": Alias("dtype", "transformers' former name of dtype", _torch_dtype),
    },
    "HfApiSpec": {
        "api_key": Alias("token", "the Hugging Face token or the server's key (the openai-style name)"),
        "api_base": Alias("base_url", "the server to call instead of Hugging Face's router"),
    },
    "LiteLLMSpec": {
        "base_url": Alias("api_base", "the provider's base URL (litellm takes both names)"),
    },
    "OpenAIServerSpec": {
        "base_url": Alias("api_base", "the server's base URL (the openai SDK's name)"),
    },
    "AzureOpenAIServerSpec": {
        "api_base": refused(
            "a full deployment base URL", "give azure_endpoint=https://<resource>.openai.azure.com instead"
        ),
        "base_url": refused(
            "a full deployment base URL", "give azure_endpoint=https://<resource>.openai.azure.com instead"
        ),
        "organization": Alias("client_kwargs.organization", "the OpenAI-Organization header"),
        "project": Alias("client_kwargs.project", "the OpenAI-Project header"),
    },
}


def aliases_for(spec_cls: type) -> dict[str, Alias]:
    """The alias table of a spec class: COMMON, API for remote backends, then each class's own
    (:data:`BY_SPEC`, or an ``aliases`` ClassVar on the spec)."""
    table = dict(COMMON)
    if getattr(spec_cls, "remote_api", False):  # ModelSpec.remote_api: True for ApiSpec
        table.update(API)
    for klass in reversed(spec_cls.__mro__):
        table.update(BY_SPEC.get(klass.__name__, {}))
        table.update(klass.__dict__.get("aliases", {}))
    return table


def _none_is_unset(info: Any) -> bool:
    """True when ``None`` given for this field means "not set" (smolagents' convention, and ``key: null``
    in a config): its default is something else, or the environment may supply it."""
    extra = info.json_schema_extra
    has_env = isinstance(extra, Mapping) and bool(extra.get("env"))
    return has_env or info.is_required() or info.default is not None or info.default_factory is not None


def resolve(spec_cls: Any, data: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Canonical kwargs from kwargs that may use smolagents' names, and the problems found.

    ``None`` for a field whose default is not ``None`` means "not set" (smolagents' convention), so it is
    dropped and the default (or the env fallback) applies.
    """
    fields = spec_cls.model_fields
    table = aliases_for(spec_cls)
    out: dict[str, Any] = {}
    problems: list[Problem] = []
    given_by: dict[str, str] = {}  # canonical top-level key -> the name the user wrote for it
    later: list[tuple[str, Any, Alias]] = []
    for key, value in data.items():
        alias = table.get(key)
        if alias is not None and alias.target != key and key not in fields:
            later.append((key, value, alias))
            continue
        if alias is None and key not in fields and not did_you_mean(key, fields):
            hint = did_you_mean(key, table)  # a misspelt smolagents name (the spec reports other typos)
            if hint:
                problems.append(Problem(key, f"unknown key, {hint}", "correct the name, or remove it"))
                continue
        if alias is not None and alias.convert is not None:
            try:
                value = alias.convert(value)
            except ValueError as exc:
                problems.append(Problem(key, str(exc), "give a supported value"))
                continue
        if value is None and key in fields and _none_is_unset(fields[key]):
            continue
        out[key] = value
        given_by[key] = key
    for key, value, alias in later:
        if alias.target is None:
            if value is None or value in alias.keep:
                continue
            problems.append(
                Problem(
                    key, f"smolagents' `{key}` ({alias.note}) is not supported by modelfactory", alias.fix
                )
            )
            continue
        if alias.convert is not None and value is not None:
            try:
                value = alias.convert(value)
            except ValueError as exc:
                problems.append(Problem(key, str(exc), f"give a supported value, or use {alias.target}"))
                continue
        if value is None:
            continue
        top, _, sub = alias.target.partition(".")
        if sub:
            bucket = out.setdefault(top, {})
            if not isinstance(bucket, dict):
                continue  # the dict field itself is invalid: its own validation reports it
            if sub in bucket:
                problems.append(
                    Problem(key, f"means {alias.target}, which is also given", f"keep only {alias.target}")
                )
                continue
            out[top] = {**bucket, sub: value}
        elif top in given_by:
            problems.append(
                Problem(
                    key,
                    f"means the same as {top}, which is also given (as {given_by[top]})",
                    f"keep one of them (configs use {top})",
                )
            )
        else:
            out[top] = value
            given_by[top] = key
    return out, problems


def alias_warnings(node: Mapping[str, Any] | Any, spec_cls: Any, source: str = "") -> list[Problem]:
    """An alias written in a config node of ``spec_cls`` works, but configs should use the canonical
    names: one warning each (refused names are already errors of the config). The node's own keys only:
    :func:`modelfactory.factory.config_warnings` finds the spec of a ``_target_`` and checks members."""
    table = aliases_for(spec_cls)
    fields = spec_cls.model_fields
    out = []
    for key in node:
        alias = table.get(str(key))
        if alias is None or alias.target is None or alias.target == key or key in fields:
            continue
        out.append(
            Problem(str(key), f"is smolagents' name for {alias.target}", f"write {alias.target}", source)
        )
    return out
