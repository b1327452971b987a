"""``LiteLLMModel``: any provider litellm knows (``anthropic/...``, ``azure/...``, ``openai/...``, ...).

litellm is imported on the first call, not when the model is built: its import takes ~3 s, and without
``LITELLM_LOCAL_MODEL_COST_MAP=True`` (set here before importing it) it blocks on a network fetch.

Keys: ``api_key`` when configured; otherwise litellm reads the provider's own variable
(``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY``, ``AZURE_API_KEY``/``AZURE_OPENAI_API_KEY``, ...). When the
request goes somewhere else than the provider's own service because the config says so (``api_base``),
no key from the environment is sent (litellm would send e.g. ``OPENAI_API_KEY`` to any base URL): a
placeholder goes instead, and the config must name the key, ``api_key: ${oc.env:MY_KEY}``. A base URL
litellm reads from the environment (``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL``, ``<PROVIDER>_API_BASE``)
goes with the provider's env key when both are set: the user's own pairing, as the SDKs treat it (a
placeholder when no key is set). ``azure/`` models: their base URL is always the user's own resource.

Azure: ``api_version`` is passed explicitly, from the config or ``OPENAI_API_VERSION`` (litellm ignores
that variable and would send its own default), and ``api_base`` falls back to ``AZURE_OPENAI_ENDPOINT``
(then to litellm's own ``AZURE_API_BASE``).

Retries: the model's ``retry`` policy (:mod:`modelfactory.retry`, applied by the ``Model`` base class)
retries retryable failures (429, 408, 5xx, timeouts, lost connections), honouring ``Retry-After`` (which
litellm keeps in ``litellm_response_headers``); litellm's own retries are switched off (``num_retries=0``
also sets the openai client's ``max_retries=0``) so attempts never stack. ``num_retries`` is kept as a
deprecated alias: ``retry.max_attempts = num_retries + 1``. A stream is retried only until its first delta.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator

from .._batchapi import BatchAdapter
from ..errors import MessageError, MissingDependencyError, ModelFactoryError, Problem
from ..messages import ChatMessage, ChatMessageStreamDelta
from ..model import GenerationRequest, Model
from ..retry import is_transport_error
from ..settings import ApiSpec, check_http_url
from . import _api as api
from . import _openai_wire as wire
from ._api import reserved_params
from .openai import OPENAI_HOSTS

__all__ = ["LiteLLMModel", "LiteLLMSpec", "import_litellm"]

# Sent as the key to a custom api_base when the config names none (litellm would read the env key).
NO_KEY = "EMPTY"
# litellm.completion arguments the adapter sets itself.
RESERVED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "stop",
        "response_format",
        "tools",
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "timeout",
        "num_retries",
        "max_retries",
    }
)
# Providers' own hosts: a base URL env var naming one of these is not "somewhere else".
_OFFICIAL_HOSTS = (*OPENAI_HOSTS, "api.anthropic.com")
# Providers whose chat APIs take only string content (smolagents flattens messages for these).
TEXT_ONLY_PREFIXES = ("ollama", "groq", "cerebras")
_configured = threading.Lock()
_LITELLM_PREFIX = re.compile(r"^(litellm\.\w+:\s*)+")


def import_litellm(backend: str) -> Any:
    """Import litellm without its network fetch, and keep it quiet (no debug banners with request data)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        raise MissingDependencyError("litellm", "litellm", backend) from None
    with _configured:
        if not getattr(litellm, "_modelfactory_configured", False):
            litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on errors
            litellm.set_verbose = False
            litellm._modelfactory_configured = True
    return litellm


# Where litellm reads a provider's key from (the common providers; others are not checked ahead).
_PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "azure": ("AZURE_API_KEY", "AZURE_OPENAI_API_KEY"),
    "gemini": ("GEMINI_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "xai": ("XAI_API_KEY",),
    "cohere": ("COHERE_API_KEY",),
}


def text_only_default(data: Any) -> Any:
    """A spec's raw data with ``flatten_messages_as_text`` on for a ``model_id`` of a provider that takes
    only string content, unless the config says otherwise (what smolagents' LiteLLMModel does)."""
    if isinstance(data, dict) and data.get("flatten_messages_as_text") is None:
        model_id = data.get("model_id")
        if isinstance(model_id, str) and model_id.startswith(TEXT_ONLY_PREFIXES):
            data = {**data, "flatten_messages_as_text": True}
    return data


class LiteLLMSpec(ApiSpec):
    sdk = ("litellm", "litellm")
    reasoning_style = "litellm"
    cache_exclude = frozenset({"num_retries"})
    model_id: str = Field(description="a litellm model string, e.g. anthropic/claude-3-5-sonnet-latest")
    api_base: str | None = Field(None, description="the provider's base URL, e.g. http://127.0.0.1:4000/v1")
    api_key: SecretStr | None = Field(
        None,
        description="the provider's key; unset: litellm reads the provider's env var (ANTHROPIC_API_KEY, ...), "
        "except with a custom api_base",
    )
    api_version: str | None = Field(None, description="Azure API version; unset: OPENAI_API_VERSION")
    retry_alias = "num_retries"
    num_retries: int | None = Field(
        None, ge=0, description="deprecated alias of retry.max_attempts - 1 (retries after the first request)"
    )
    completion_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for litellm.completion, passed as given"
    )

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return check_http_url(value, "http://127.0.0.1:4000/v1")

    @model_validator(mode="before")
    @classmethod
    def _flatten_default(cls, data: Any) -> Any:
        """Providers that take only string content get flattened messages unless told otherwise (what
        smolagents' LiteLLMModel does for these prefixes)."""
        return text_only_default(data)

    def problems(self) -> list[Problem]:
        out = []
        for where, params in (
            ("completion_kwargs", self.completion_kwargs),
            ("generation_kwargs", self.generation_kwargs),
        ):
            for key in reserved_params(params, RESERVED):
                if key in ("num_retries", "max_retries"):
                    fix = "use model.retry.max_attempts (litellm's own retries stay off so they never stack)"
                elif key in type(self).model_fields:
                    fix = f"use model.{key}"
                else:
                    fix = "pass stop_sequences / response_format / tools_to_call_from to the call instead"
                out.append(Problem(f"{where}.{key}", "is set by the adapter", fix))
        return out

    @property
    def is_azure(self) -> bool:
        return self.model_id.startswith("azure/")

    def provider(self) -> str | None:
        """The provider litellm will use, for the common cases (``anthropic/...``, ``gpt-4o``, ...)."""
        head, sep, _ = self.model_id.partition("/")
        if sep:
            return head
        if self.model_id.startswith(("gpt-", "o1", "o3", "o4")):
            return "openai"
        if self.model_id.startswith("claude"):
            return "anthropic"
        return None

    def environment_problems(self) -> list[Problem]:
        out = super().environment_problems()
        if out or (self.api_key is not None and self.api_key.get_secret_value()):
            return out
        provider = self.provider()
        envs = _PROVIDER_KEYS.get(provider or "")
        if provider is None or envs is None:
            return out
        prefix = "OPENAI" if provider == "openai" else provider.upper()
        custom_base = self.api_base is not None or any(
            (v := os.environ.get(f"{prefix}_{suffix}")) and urlparse(v).hostname not in _OFFICIAL_HOSTS
            for suffix in ("BASE_URL", "API_BASE")
        )
        if custom_base and not self.is_azure:
            return out  # no key from the environment goes to a custom base URL (a placeholder does)
        if not any(os.environ.get(e) for e in envs):
            out.append(
                Problem(
                    "api_key",
                    f"no key for {provider} (env var {' / '.join(envs)} is not set)",
                    f"export {envs[0]}=... (or set model.api_key=${{oc.env:MY_KEY_VAR}} in the config)",
                )
            )
        if self.is_azure and not (
            self.api_base or os.environ.get("AZURE_OPENAI_ENDPOINT") or os.environ.get("AZURE_API_BASE")
        ):
            out.append(
                Problem(
                    "api_base",
                    "no Azure endpoint (env var AZURE_OPENAI_ENDPOINT / AZURE_API_BASE is not set)",
                    "export AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com (or set model.api_base)",
                )
            )
        return out


class LiteLLMModel(Model):
    """Chat completions through ``litellm.completion``."""

    Spec = LiteLLMSpec
    spec: LiteLLMSpec
    supports_response_format = True
    supports_tools = True

    @functools.cached_property
    def litellm(self) -> Any:
        return import_litellm(type(self).__name__)

    @property
    def client(self) -> Any:
        """The ``litellm`` module, which every call goes through (smolagents' ``LiteLLMModel.client``)."""
        return self.litellm

    def create_client(self) -> Any:
        """smolagents' hook: the ``litellm`` module (imported quietly, its cost-map fetch off)."""
        return self.litellm

    # ------------------------------------------------------------------ the wire

    def _api_base(self) -> str | None:
        spec = self.spec
        if spec.api_base is None and spec.is_azure:
            return os.environ.get("AZURE_OPENAI_ENDPOINT") or None
        return spec.api_base

    def _env_api_base(self) -> str | None:
        """A base URL litellm would read from the environment for this model's provider, if one is set
        (``OPENAI_BASE_URL``/``OPENAI_API_BASE``, ``ANTHROPIC_BASE_URL``, ``<PROVIDER>_API_BASE``, ...)."""
        try:
            provider = str(self.litellm.get_llm_provider(self.model_id)[1])
        except Exception:
            return None
        prefix = (
            "OPENAI"
            if provider in ("openai", "text-completion-openai")
            else provider.upper().replace("-", "_")
        )
        for name in (f"{prefix}_BASE_URL", f"{prefix}_API_BASE"):
            value = os.environ.get(name)
            if value and urlparse(value).hostname not in _OFFICIAL_HOSTS:
                return value
        return None

    def _api_key(self) -> str | None:
        """The key to send. litellm's env lookup (``OPENAI_API_KEY``, ...) is kept for the provider's own
        service and for the base URL the environment itself names (``OPENAI_BASE_URL`` with
        ``OPENAI_API_KEY``: the user's own pairing); a custom api_base from the config gets a placeholder,
        and so does an env base URL without an env key (a keyless local server)."""
        spec = self.spec
        if spec.api_key is not None and spec.api_key.get_secret_value():
            return spec.api_key.get_secret_value()
        if spec.is_azure:
            return None  # an Azure api_base is always the user's own resource
        if spec.api_base is not None:
            return NO_KEY
        if self._env_api_base() is not None and not self._env_key_set():
            return NO_KEY
        return None

    def _env_key_set(self) -> bool:
        provider = self.spec.provider() or ""
        envs = _PROVIDER_KEYS.get(provider, (f"{provider.upper().replace('-', '_')}_API_KEY",))
        return any(os.environ.get(e) for e in envs)

    def _call_kwargs(self, req: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        bad = reserved_params(req.params, RESERVED)
        if bad:
            raise MessageError(
                f"{type(self).__name__}: {', '.join(bad)} cannot be passed as a generation kwarg "
                "(configure it on the model, or use stop_sequences / response_format / tools_to_call_from)"
            )
        spec = self.spec
        kwargs: dict[str, Any] = {**spec.completion_kwargs, **req.params}
        kwargs.update(model=self.model_id, messages=req.messages, timeout=spec.timeout, num_retries=0)
        api_base, api_key = self._api_base(), self._api_key()
        if api_base is not None:
            kwargs["api_base"] = api_base
        if api_key is not None:
            kwargs["api_key"] = api_key
        api_version = spec.api_version or (os.environ.get("OPENAI_API_VERSION") if spec.is_azure else None)
        if api_version:
            kwargs["api_version"] = api_version
        kwargs.update(wire.request_fields(req, stream=stream))
        return kwargs

    def batch_adapter(self) -> BatchAdapter | None:
        """Anthropic's Message Batches for ``anthropic/<model>`` (over httpx; litellm is not involved);
        None for every other provider."""
        if not self.model_id.startswith("anthropic/"):
            return None
        from ._anthropic_batch import AnthropicBatches

        return AnthropicBatches(self)

    def _sender(self) -> Any:
        """What ``completion`` / ``acompletion`` are called on: the ``litellm`` module (a Router for
        :class:`~modelfactory.backends.litellm_router.LiteLLMRouterModel`)."""
        return self.litellm

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        kwargs = self._call_kwargs(req, stream=False)
        try:
            return wire.parse_completion(self._sender().completion(**kwargs))
        except Exception as exc:
            raise self._translate(exc) from exc

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        try:
            stream = self._sender().completion(**self._call_kwargs(req, stream=True))
            yield from wire.iter_stream(stream)
        except Exception as exc:
            raise self._translate(exc) from exc

    async def _agenerate(self, req: GenerationRequest) -> ChatMessage:
        kwargs = self._call_kwargs(req, stream=False)
        try:
            return wire.parse_completion(await self._sender().acompletion(**kwargs))
        except Exception as exc:
            raise self._translate(exc) from exc

    async def _agenerate_stream(self, req: GenerationRequest) -> AsyncIterator[ChatMessageStreamDelta]:
        try:
            stream = await self._sender().acompletion(**self._call_kwargs(req, stream=True))
            async for delta in wire.aiter_stream(stream):
                yield delta
        except Exception as exc:
            raise self._translate(exc) from exc

    # ------------------------------------------------------------------ errors

    def _auth_hint(self) -> str:
        if self._api_key() == NO_KEY:
            return (
                " (with a custom api_base no key is read from the environment, except the provider's key "
                "set together with its base URL variable: set model.api_key=${oc.env:YOUR_KEY_VAR})"
            )
        provider = self.model_id.split("/", 1)[0] if "/" in self.model_id else "openai"
        var = "AZURE_API_KEY" if self.spec.is_azure else f"{provider.upper().replace('-', '_')}_API_KEY"
        return f" (check model.api_key or {var})"

    def _translate(self, exc: Exception) -> Exception:
        """litellm exceptions (subclasses of openai's) -> one BackendError with status, secrets scrubbed."""
        if isinstance(exc, ModelFactoryError):
            return exc
        import openai

        cause = _network_cause(exc)
        code = getattr(exc, "status_code", None)
        code = code if isinstance(code, int) and not isinstance(code, bool) else None
        if cause is not None:  # a timeout, a refused connection (litellm says 500), a reply cut short
            translated = api.transport_error(self, cause, self._endpoint())
            if translated is not None:
                return translated
        if isinstance(exc, openai.APITimeoutError) and code is None:
            return api.timeout_error(self)
        if _in_chain(exc, json.JSONDecodeError):  # litellm says "500" for a reply that is not JSON
            return self._provider_error(f"the server's reply is not valid JSON ({_provider_message(exc)})")
        if code is not None and (
            # the server's own status: litellm also raises its plain APIError (403, 409) and its Timeout
            # (a 408 / 504 answer), but its catch-all APIConnectionError carries a made-up 500
            isinstance(exc, openai.APITimeoutError) or not isinstance(exc, openai.APIConnectionError)
        ):
            headers = getattr(exc, "litellm_response_headers", None) or getattr(
                getattr(exc, "response", None), "headers", None
            )
            return api.status_error(self, code, _provider_message(exc), headers)
        if isinstance(exc, openai.OpenAIError):  # e.g. litellm's catch-all APIConnectionError (fake 500)
            return self._provider_error(_provider_message(exc))
        return api.transport_error(self, exc, self._endpoint()) or exc  # a 200 with no choice

    def _endpoint(self) -> str:
        return self._api_base() or f"the {self.model_id.split('/')[0]} API"


def _in_chain(exc: BaseException, kind: type[BaseException]) -> bool:
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 12:
        if isinstance(cur, kind):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


def _network_cause(exc: BaseException) -> BaseException | None:
    """The transport failure behind ``exc`` (connection refused, DNS, timeout), if there is one."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 12:
        if is_transport_error(cur):
            return cur
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return None


def _provider_message(exc: Any) -> str:
    message = str(getattr(exc, "message", None) or exc)
    return _LITELLM_PREFIX.sub("", message).strip()
