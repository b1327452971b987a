"""The spec every backend validates its kwargs with.

Why pydantic-settings: a spec field may fall back to a named environment variable (``OPENAI_API_KEY``,
``AZURE_OPENAI_ENDPOINT``, ...). Only the variables a field *declares* are read: a generic settings
class would also read ``TEMPERATURE`` or ``API_KEY`` from the environment, which nobody expects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .cache import CacheSpec
from .errors import ConfigError, Problem, did_you_mean
from .generation import generation_problems
from .pricing import Price
from .reasoning import Effort, reasoning_problems
from .retry import RetryPolicy
from .secrets import (
    REDACTED,
    credential_values,
    is_credential,
    is_secret_key,
    names_credential,
    names_url_credential,
    public_headers,
    redact_env,
    redact_mapping,
)

__all__ = [
    "REDACTED",
    "ApiSpec",
    "ModelSpec",
    "RetryPolicy",
    "env_field",
    "plain",
    "redact_env",
    "redact_mapping",
    "to_plain",
]


def env_field(default: Any = ..., *, env: str | tuple[str, ...], **kwargs: Any) -> Any:
    """A spec field that falls back to the first set environment variable in ``env``."""
    names = (env,) if isinstance(env, str) else tuple(env)
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra["env"] = list(names)
    return Field(default, json_schema_extra=extra, **kwargs)


def _field_envs(info: FieldInfo) -> list[str]:
    extra = info.json_schema_extra
    if isinstance(extra, Mapping):
        env = extra.get("env")
        if isinstance(env, list):
            return [str(e) for e in env]
    return []


class _DeclaredEnvSource(PydanticBaseSettingsSource):
    """Reads, for each field, only the environment variables it declares (first non-empty wins)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        for name in _field_envs(field):
            value = os.environ.get(name)
            if value:
                return value, name, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, info in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(info, name)
            if value is not None:
                data[name] = value
        return data


def to_plain(value: Any) -> Any:
    """Convert OmegaConf containers (what Hydra's instantiate passes) into plain dicts/lists."""
    module = type(value).__module__
    if module.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


plain = to_plain


def check_http_url(value: str | None, example: str) -> str | None:
    """A spec validator's body for endpoint fields: an http(s) URL with a host, or ``None``."""
    if value is not None:
        from urllib.parse import urlparse

        parsed = urlparse(value)
        # hostname, not netloc: "http://:8080" and "http://user@/v1" have a netloc and no host
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"must be an http(s) URL with a host, e.g. {example}")
    return value


class ModelSpec(BaseSettings):
    """Fields shared by every backend. Subclasses add theirs; unknown keys are errors."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True, case_sensitive=True)

    backend_name: ClassVar[str] = "model"
    # How `reasoning_effort` goes on the wire (modelfactory.reasoning): openai | litellm | local; None:
    # the backend has no reasoning setting (only `none` is accepted).
    reasoning_style: ClassVar[str | None] = None
    # True for a spec whose model is a remote API (ApiSpec): priced per token, smolagents' API-client
    # names apply. Read by pricing and aliases, which sit below this module and cannot import ApiSpec.
    remote_api: ClassVar[bool] = False
    # Fields that do not change what a model answers, left out of its response-cache identity: here the
    # cache, price and retry settings, and the generation defaults and message shaping (their effect is already
    # in the request). Each spec class adds its own (transport, where it runs); see cache_exclusions().
    cache_exclude: ClassVar[frozenset[str]] = frozenset(
        {
            "cache",
            "price",
            "retry",
            "requests_per_minute",
            "temperature",
            "max_tokens",
            "top_p",
            "seed",
            "generation_kwargs",
            "custom_role_conversions",
            "flatten_messages_as_text",
        }
    )

    # Environment variables a field falls back to outside the spec (the backend or its SDK reads them when
    # the config leaves the field unset; an env_field is read by the spec itself): {field: variable}.
    # Named as the fix when a secret is refused on the command line.
    env_fallbacks: ClassVar[Mapping[str, str]] = {}
    # Endpoint fields: when a config sets one, env_fallbacks are not sent there (a provider's key never
    # goes to another host), so they are no fix to suggest.
    env_fallbacks_unless: ClassVar[frozenset[str]] = frozenset()

    model_id: str = Field(description="the provider's model name, or a local path / hub id")
    supports_stop: bool | None = Field(
        None,
        description="send stop sequences to the provider; false: generate, then trim afterwards "
        "(for models that reject `stop`, e.g. some reasoning models); unset: from the capability map "
        "(modelfactory.capabilities)",
    )
    supports_temperature: bool | None = Field(
        None,
        description="send `temperature` and the other sampling parameters (top_p, presence/frequency "
        "penalties, logprobs); false: leave them out (models that reject them, e.g. o3, gpt-5); "
        "unset: from the capability map (modelfactory.capabilities)",
    )
    price: Price | None = Field(
        None,
        description="USD per million tokens {input, output, cached_input, batch_discount}; "
        "default: LiteLLM's price map for API models, none (cost unknown) for local ones",
    )
    custom_role_conversions: dict[str, str] | None = Field(
        None, description="merged over the defaults tool-call→assistant, tool-response→user"
    )
    flatten_messages_as_text: bool = False
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, gt=0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    reasoning_effort: Effort | None = Field(
        None,
        description="none | minimal | low | medium | high | max, mapped per provider and model family "
        "(modelfactory.reasoning); null: the provider's default",
    )
    generation_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="other generation parameters, passed to the provider as-is"
    )
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy,
        description="retries of retryable failures (429, 408, 5xx, timeouts, lost connections): "
        "{max_attempts, initial_wait, max_wait, jitter}",
    )
    requests_per_minute: float | None = Field(
        None, gt=0, description="at most this many requests per minute from this model object (retries count)"
    )

    cache: CacheSpec = Field(
        default_factory=CacheSpec,
        description="response cache: {mode: off | read_write | replay, path: .modelfactory/cache.sqlite}",
    )

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_shorthand(cls, value: Any) -> Any:
        if value is None:
            return CacheSpec()  # `cache: null` = not set here
        return {"mode": value} if isinstance(value, str) else value  # `cache: replay`

    @field_validator("retry", mode="before")
    @classmethod
    def _retry_null_is_default(cls, value: Any) -> Any:
        return RetryPolicy() if value is None else value  # `retry: null` in a config = not set here

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _DeclaredEnvSource(settings_cls))

    # ------------------------------------------------------------------ building

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], *, owner: str | None = None) -> ModelSpec:
        """Validate ``kwargs``; raise one :class:`ConfigError` listing every problem."""
        from .aliases import resolve

        data = {k: to_plain(v) for k, v in kwargs.items() if k not in ("_target_", "_convert_", "_partial_")}
        # smolagents' names -> ours; `api_key: null` (or any None where None is not the default) means
        # "not given here", so the default or the env fallback applies.
        data, named = resolve(cls, data)
        owner = owner or cls.__name__
        named = [Problem(p.key, p.problem, p.fix, owner) for p in named]
        # the generation defaults as given (before pydantic turns True into 1), checked as a call's kwargs
        generation = [Problem(p.key, p.problem, p.fix, owner) for p in cls.generation_problems(data)]
        try:
            spec = cls(**data)
        except ValidationError as exc:
            found = cls._problems(exc, owner)
            flagged = {p.key for p in found}  # said once per key: pydantic's word where it has one
            generation = [p for p in generation if p.key not in flagged]
            raise ConfigError(named + found + generation, title=f"invalid {owner} config") from None
        problems = named + generation + spec.base_problems() + reasoning_problems(spec) + spec.problems()
        if problems:
            raise ConfigError(
                [Problem(p.key, p.problem, p.fix, p.source or owner) for p in problems],
                title=f"invalid {owner} config",
            )
        return spec

    @classmethod
    def env_var_for(cls, field: str, config: Mapping[str, Any]) -> str | None:
        """The environment variable that feeds ``field`` when a config like ``config`` (unvalidated) leaves
        it unset: the field's own ``env_field``, else its ``env_fallbacks`` entry; None when none does."""
        info = cls.model_fields.get(field)
        envs = _field_envs(info) if info is not None else []
        if envs:
            return envs[0]
        if any(config.get(name) for name in cls.env_fallbacks_unless):
            return None
        return cls.env_fallbacks.get(field)

    @classmethod
    def generation_problems(cls, data: Mapping[str, Any]) -> list[Problem]:
        """The generation defaults in ``data`` (a spec's kwargs) checked as a call's kwargs are, by the one
        definition in :mod:`modelfactory.generation`: NaN, ``max_tokens=2.5``, a seed past 64 bits,
        ``generation_kwargs.temperature=-1``."""
        fields = {k: data.get(k) for k in ("temperature", "max_tokens", "top_p", "seed")}
        extra = data.get("generation_kwargs")
        return generation_problems(fields, prefix="") + (
            generation_problems(extra, prefix="generation_kwargs") if isinstance(extra, Mapping) else []
        )

    def problems(self) -> list[Problem]:
        """Cross-field checks a backend adds; run once every field is individually valid."""
        return []

    def base_problems(self) -> list[Problem]:
        """Cross-field checks of the shared fields (subclasses need not call it from ``problems``)."""
        return []

    def environment_problems(self) -> list[Problem]:
        """What a call would still lack (a provider key the SDK reads from the environment, an SDK that is
        not installed): reported by ``modelfactory check``, not at build time, where the SDK may still
        find what it needs on its own. No network, no imports of the SDK."""
        return []

    @classmethod
    def _problems(cls, exc: ValidationError, owner: str) -> list[Problem]:
        problems = []
        fields = cls.model_fields
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "config"
            top = str(err["loc"][0]) if err["loc"] else ""
            info = fields.get(top)
            if err["type"] == "extra_forbidden":
                parent, where = _nested_fields(cls, err["loc"][:-1]), owner
                if parent is None:  # an unknown key inside a free-form dict: cannot happen today
                    parent = {}
                elif len(err["loc"]) > 1:
                    where = ".".join(str(p) for p in err["loc"][:-1])
                word = str(err["loc"][-1]) if err["loc"] else top
                hint = did_you_mean(word, parent)
                problems.append(
                    Problem(
                        key=loc,
                        problem="unknown key" + (f", {hint}" if hint else ""),
                        fix=f"remove it; {where} accepts: {', '.join(sorted(parent))}",
                        source=owner,
                    )
                )
            elif err["type"] == "missing":
                envs = _field_envs(info) if info else []
                if envs and is_secret_key(top):  # never invite a key onto the command line
                    fix = f"export {envs[0]}=... (keys belong in the environment, not in configs)"
                else:
                    fix = f"set model.{loc}=..." + (f" or the env var {' / '.join(envs)}" if envs else "")
                problem = "required but not set"
                if envs:
                    problem += f" (env var {' / '.join(envs)} is not set either)"
                problems.append(Problem(key=loc, problem=problem, fix=fix, source=owner))
            else:
                secret = is_credential(loc) or (
                    info is not None and (is_secret_key(top) or "SecretStr" in str(info.annotation))
                )
                # the value as given, its credentials masked (a URL's user:KEY@, a header inside a dict)
                shown = "" if secret else f" (got {_short(redact_mapping(err.get('input'), loc))})"
                desc = f"; {info.description}" if info is not None and info.description else ""
                problems.append(
                    Problem(
                        key=loc, problem=f"{err['msg']}{shown}", fix=f"give a valid value{desc}", source=owner
                    )
                )
        return problems

    # ------------------------------------------------------------------ reading

    def secret_values(self) -> list[str]:
        """Every secret this spec holds, so error messages, results and cached replies can be scrubbed of
        them: ``SecretStr`` fields, and every credential inside the other fields (a header value, an
        ``api_key`` in ``generation_kwargs``, a URL's userinfo), whatever env var it came from."""
        out = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                out.append(value.get_secret_value())
            elif not isinstance(value, (bool, int, float)) and value is not None:
                out += (
                    credential_values({name: value})
                    if isinstance(value, str)
                    else credential_values(value, name)
                )
        return list(dict.fromkeys(out))

    @classmethod
    def cache_exclusions(cls) -> frozenset[str]:
        """Every ``cache_exclude`` along the class's bases: a subclass adds names, never drops one."""
        out: frozenset[str] = frozenset()
        for klass in cls.__mro__:
            out |= frozenset(vars(klass).get("cache_exclude", ()))
        return out

    def cache_identity(self) -> dict[str, Any]:
        """The fields that decide a reply, for the response-cache key: no credential-named
        (:func:`~modelfactory.secrets.names_credential`) or ``SecretStr`` field, none of
        :meth:`cache_exclusions`. Field serializers apply (a callable's dotted path)."""
        skip = self.cache_exclusions()
        names = {
            name
            for name in type(self).model_fields
            if name not in skip
            and not names_credential(name)
            and not isinstance(getattr(self, name), SecretStr)
        }
        out = self.model_dump(include=names)
        client = getattr(self, "client_kwargs", None)
        if "client_kwargs" in skip and isinstance(client, Mapping):
            # the transport settings stay out, but a public header (OpenAI-Beta) changes the replies, and
            # so does every query parameter but a credential (default_query={"api-version": ...})
            headers = public_headers(client.get("default_headers")) | public_headers(client.get("headers"))
            if headers:
                out["client_headers"] = headers
            query = client.get("default_query")
            if isinstance(query, Mapping):
                kept = {str(k): str(v) for k, v in query.items() if not names_url_credential(str(k))}
                if kept:
                    out["client_query"] = kept
        return out

    def redacted(self) -> dict[str, Any]:
        """The spec as a dict that is safe to write to disk or logs."""
        return redact_mapping(self.model_dump())

    def generation_defaults(self) -> dict[str, Any]:
        params = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
            **self.generation_kwargs,
        }
        return {k: v for k, v in params.items() if v is not None}


class ApiSpec(ModelSpec):
    """Fields shared by the backends that call a remote API (OpenAI, Azure, HF Inference, LiteLLM)."""

    # A deprecated field kept for old configs: N retries, i.e. ``retry.max_attempts = N + 1``.
    retry_alias: ClassVar[str | None] = None
    # The SDK the backend needs, and the pip extra that installs it.
    sdk: ClassVar[tuple[str, str] | None] = None
    remote_api = True

    cache_exclude = frozenset({"timeout"})

    timeout: float = Field(
        120.0, gt=0, description="seconds before one request (one attempt) is abandoned; retried like a 5xx"
    )

    @model_validator(mode="after")
    def _fold_retry_alias(self) -> ApiSpec:
        alias = type(self).retry_alias
        value = getattr(self, alias, None) if alias else None
        if isinstance(value, int) and "max_attempts" not in self.retry.model_fields_set:
            self.retry = self.retry.model_copy(update={"max_attempts": value + 1})
        return self

    def base_problems(self) -> list[Problem]:
        alias = type(self).retry_alias
        value = getattr(self, alias, None) if alias else None
        if isinstance(value, int) and self.retry.max_attempts != value + 1:
            return [
                Problem(
                    str(alias),
                    f"conflicts with retry.max_attempts={self.retry.max_attempts} "
                    f"({alias}={value} means retry.max_attempts={value + 1})",
                    f"remove {alias} (deprecated) and keep retry.max_attempts",
                )
            ]
        return []

    def environment_problems(self) -> list[Problem]:
        if self.sdk is None:
            return []
        package, extra = self.sdk
        import importlib.util

        if importlib.util.find_spec(package) is None:
            return [
                Problem(
                    "_target_",
                    f"needs the '{package}' package, which is not installed",
                    f"pip install 'modelfactory[{extra}]'",
                )
            ]
        return []


def _nested_fields(cls: type[BaseModel], path: Any) -> dict[str, Any] | None:
    """The fields of the (nested) model at ``path`` below ``cls``, or None when it is not a model."""
    model: Any = cls
    for part in path:
        fields: dict[str, Any] = getattr(model, "model_fields", {})
        info = fields.get(str(part))
        ann = info.annotation if info is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return dict(getattr(model, "model_fields", {}))


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
