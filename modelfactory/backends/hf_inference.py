"""``HfApiModel`` (alias ``InferenceClientModel``): chat completions over ``huggingface_hub.InferenceClient``.

It reaches Hugging Face Inference Providers (``provider=...``), Inference Endpoints and any TGI / vLLM /
OpenAI-compatible server (``base_url=...``).

Token policy (a security requirement): the ambient Hugging Face token (``HF_TOKEN``, or the one saved by
``hf auth login``) is only sent to Hugging Face hosts over https: no ``base_url`` (the HF router), or a
``base_url`` whose host is ``huggingface.co``, ``hf.co``, ``hf.space``, ``huggingface.cloud`` or a
subdomain of one, and to the origin ``HF_ENDPOINT`` names (a private Hub, trusted with the token by
huggingface_hub itself). For any other server no token is sent unless the config names ``token`` explicitly.
``InferenceClient`` itself would send ``HF_TOKEN`` anywhere (``token=None`` and ``token=""`` both fall
back to it, ``token=False`` is refused), so for other hosts the client gets a placeholder token and a
``None`` authorization header, which the SDK drops: the request carries no ``Authorization`` at all.

SDK behaviours this adapter relies on (huggingface_hub 1.x):
- ``InferenceClient(base_url=...)`` posts to ``<base_url>/v1/chat/completions`` (``/v1`` is appended
  unless the URL already ends in ``/v1`` or ``/chat/completions``) and sends the ``model`` passed to
  ``chat_completion`` in the body (``"dummy"`` when none is given, so we always pass ``model_id``).
- Every request goes through huggingface_hub's shared HTTP session, which refuses all traffic, even to
  ``127.0.0.1``, when ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` was set at import time.
- With a ``base_url`` the SDK always uses its ``hf-inference`` helper, so ``provider`` would be ignored,
  and an OpenAI ``response_format={"type": "json_schema", ...}`` is rewritten to TGI's
  ``{"type": "json_object", "value": <schema>}``.
- The SDK does not retry (checked: one request per call for 429, 5xx, resets and timeouts);
  ``timeout`` applies per request, and the model's ``retry`` policy does the retrying.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator

from ..errors import (
    BackendError,
    MessageError,
    MissingDependencyError,
    ModelFactoryError,
    Problem,
    UnsupportedFeatureError,
)
from ..messages import ChatMessage, ChatMessageStreamDelta
from ..model import GenerationRequest, Model
from ..settings import ApiSpec, check_http_url
from . import _api as api
from . import _openai_wire as wire
from ._api import reserved_params

__all__ = [
    "HF_HOSTS",
    "STRUCTURED_OUTPUT_PROVIDERS",
    "HfApiModel",
    "HfApiSpec",
    "InferenceClientModel",
    "is_hf_host",
]

# Hosts (and their subdomains) that may receive the ambient Hugging Face token.
HF_HOSTS = ("huggingface.co", "hf.co", "hf.space", "huggingface.cloud")
# Satisfies the SDK's key lookup for servers that get no token; never sent (its header is dropped).
_NO_TOKEN = "no-token"
# chat_completion arguments the adapter sets itself; a generation kwarg may not override them.
_RESERVED = frozenset(
    {"messages", "model", "stream", "stream_options", "stop", "response_format", "tools", "extra_body"}
)
# The Inference Providers that take `response_format` through Hugging Face's router (smolagents' list,
# STRUCTURED_GENERATION_PROVIDERS); with a base_url (TGI, vLLM) the server itself decides.
STRUCTURED_OUTPUT_PROVIDERS = ("cerebras", "fireworks-ai")
# Client arguments that have their own spec field.
_OWN_CLIENT_ARGS = ("model", "base_url", "api_key", "token", "provider", "timeout", "bill_to")


def import_hf(backend: str) -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise MissingDependencyError("huggingface_hub", "hf", backend) from None
    return huggingface_hub


def is_hf_host(url: str | None) -> bool:
    """True for no URL (the HF router), an https URL on a Hugging Face domain (label-exact match), or the
    origin ``HF_ENDPOINT`` names (a private Hub: huggingface_hub sends the token there too)."""
    if url is None:
        return True
    parsed = urlparse(url)
    host = (parsed.hostname or "").lower().rstrip(".")
    if parsed.scheme == "https" and any(host == d or host.endswith("." + d) for d in HF_HOSTS):
        return True
    return _origin(url) == _origin(os.environ.get("HF_ENDPOINT") or "")


def _origin(url: str) -> tuple[str, str, int] | None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        return None
    return parsed.scheme, parsed.hostname.lower().rstrip("."), port


class HfApiSpec(ApiSpec):
    sdk = ("huggingface_hub", "hf")
    cache_exclude = frozenset({"client_kwargs", "bill_to"})
    env_fallbacks = {"token": "HF_TOKEN"}  # the ambient token, for Hugging Face hosts only

    model_id: str = Field(
        "meta-llama/Llama-3.3-70B-Instruct",
        description="Hub model id sent as `model` (with base_url: whatever name the server expects)",
    )
    provider: str | None = Field(
        None, description="Inference Provider (e.g. 'together', 'hf-inference', 'auto'); None: HF's router"
    )
    token: SecretStr | None = Field(
        None,
        description="Hugging Face token or the server's key; when unset HF_TOKEN is used for Hugging Face "
        "hosts only, and no token is sent to any other base_url",
    )
    base_url: str | None = Field(
        None,
        description="a TGI / vLLM / OpenAI-compatible server or Inference Endpoint, e.g. http://127.0.0.1:8080",
    )
    bill_to: str | None = Field(None, description="Hugging Face organization to bill (HF routing only)")
    client_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for InferenceClient (headers, cookies)"
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return check_http_url(value, "http://127.0.0.1:8080 or https://xyz.endpoints.huggingface.cloud")

    def problems(self) -> list[Problem]:
        out = []
        if self.provider is not None and self.base_url is not None:
            out.append(
                Problem(
                    "provider",
                    "ignored when base_url is set (huggingface_hub then talks to base_url directly)",
                    "set either provider or base_url",
                )
            )
        if self.model_id.startswith(("http://", "https://")):
            out.append(
                Problem(
                    "model_id",
                    "is a URL",
                    "put the server's URL in model.base_url and the model name in model_id",
                )
            )
        if self.bill_to is not None and not is_hf_host(self.base_url):
            out.append(
                Problem("bill_to", "only applies to Hugging Face hosts", "remove bill_to for this base_url")
            )
        for key in self.client_kwargs:
            if key in _OWN_CLIENT_ARGS:
                fix = "use model.token" if key == "api_key" else f"use model.{key}"
                out.append(Problem(f"client_kwargs.{key}", "has its own setting", fix))
        for key in reserved_params(self.generation_kwargs, _RESERVED):
            out.append(
                Problem(
                    f"generation_kwargs.{key}",
                    "is set by the adapter",
                    "pass stop_sequences / response_format / tools_to_call_from to the call instead",
                )
            )
        return out

    def environment_problems(self) -> list[Problem]:
        out = super().environment_problems()
        if out or self.base_url is not None or (self.token is not None and self.token.get_secret_value()):
            return out
        from huggingface_hub import get_token  # reads HF_TOKEN or the saved login: no network

        if not get_token():
            out.append(
                Problem(
                    "token",
                    "no Hugging Face token for the HF router (env var HF_TOKEN is not set, no saved login)",
                    "export HF_TOKEN=hf_... (or run `hf auth login`)",
                )
            )
        return out


class HfApiModel(Model):
    """Chat completions over ``huggingface_hub.InferenceClient``; the client is created on first use."""

    Spec = HfApiSpec
    spec: HfApiSpec
    supports_grammar = True
    supports_response_format = True
    supports_tools = True

    # ------------------------------------------------------------------ client and credentials

    @functools.cached_property
    def _hf_token(self) -> str | None:
        """The token to send: the configured one, else the ambient HF token for Hugging Face hosts only."""
        spec = self.spec
        if spec.token is not None and spec.token.get_secret_value():
            return spec.token.get_secret_value()
        if is_hf_host(spec.base_url):
            token: str | None = import_hf(type(self).__name__).get_token()
            return token
        return None

    @functools.cached_property
    def _client_kwargs(self) -> dict[str, Any]:
        spec = self.spec
        kwargs = dict(spec.client_kwargs)
        headers = dict(kwargs.pop("headers", None) or {})
        token = self._hf_token
        if token is None and spec.base_url is None:
            raise BackendError(
                "no Hugging Face token for the HF router: export HF_TOKEN=hf_... (or run `hf auth login`)",
                model_id=self.model_id,
                backend=type(self).__name__,
                status=None,
            )
        if token is None and not is_hf_host(spec.base_url):
            # InferenceClient falls back to HF_TOKEN for a None/"" token: give it a placeholder and drop
            # the Authorization header it builds from it (the SDK omits headers whose value is None).
            token = _NO_TOKEN
            if not any(str(k).lower() == "authorization" for k in headers):
                headers["authorization"] = None
        return dict(
            provider=spec.provider,
            token=token,
            timeout=spec.timeout,
            headers=headers or None,
            bill_to=spec.bill_to,
            base_url=spec.base_url,
            **kwargs,
        )

    @functools.cached_property
    def client(self) -> Any:
        """The configured ``InferenceClient`` (for inspection and direct use)."""
        return self.create_client()

    def create_client(self) -> Any:
        """A new ``InferenceClient`` with this model's settings and token policy (smolagents' hook)."""
        return import_hf(type(self).__name__).InferenceClient(**self._client_kwargs)

    def _call_client(self) -> Any:
        """A short-lived client for one request, closed when the request (or its stream) ends.

        An ``InferenceClient`` keeps every response it made in its ``ExitStack`` until it is closed
        (~12 KB per call, and an abandoned stream keeps its connection open), so a long-lived client
        grows without bound; building one costs microseconds and sends nothing.
        """
        return import_hf(type(self).__name__).InferenceClient(**self._client_kwargs)

    def _acall_client(self) -> Any:
        """A short-lived ``AsyncInferenceClient`` for one request, with the same token policy (same
        ``_client_kwargs``) as the sync client."""
        return import_hf(type(self).__name__).AsyncInferenceClient(**self._client_kwargs)

    @functools.cached_property
    def _sdk_params(self) -> frozenset[str]:
        """The parameters ``chat_completion`` takes by name in the installed huggingface_hub."""
        hub = import_hf(type(self).__name__)
        return frozenset(inspect.signature(hub.InferenceClient.chat_completion).parameters) - {"self"}

    def secret_values(self) -> list[str]:
        token = self.__dict__.get("_hf_token")  # the ambient token, once resolved
        return super().secret_values() + ([token] if token else [])

    # ------------------------------------------------------------------ the wire

    def _request(
        self,
        messages: Any,
        stop_sequences: Any,
        grammar: Any,
        response_format: Any,
        tools_to_call_from: Any,
        kwargs: dict[str, Any],
    ) -> GenerationRequest:
        """The base request, refusing up front (no request sent) structured output through the router
        on a provider that does not give it, as smolagents does."""
        provider = self.spec.provider
        if (
            response_format is not None
            and self.spec.base_url is None
            and provider not in STRUCTURED_OUTPUT_PROVIDERS
        ):
            raise UnsupportedFeatureError(
                "InferenceClientModel only supports structured outputs with these providers: "
                f"{', '.join(STRUCTURED_OUTPUT_PROVIDERS)} (model.provider is {provider!r}); set "
                "model.provider to one of them, point model.base_url at a TGI / vLLM server, or drop "
                "response_format"
            )
        return super()._request(
            messages, stop_sequences, grammar, response_format, tools_to_call_from, kwargs
        )

    def _call_kwargs(self, req: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        bad = reserved_params(req.params, _RESERVED)
        if bad:
            raise MessageError(
                f"{type(self).__name__}: {', '.join(bad)} cannot be passed as a generation kwarg "
                "(use stop_sequences / response_format / tools_to_call_from)"
            )
        kwargs: dict[str, Any] = {"messages": req.messages, "model": self.model_id}
        extra: dict[str, Any] = {}
        named = self._sdk_params - _RESERVED
        for key, value in req.params.items():
            (kwargs if key in named else extra)[key] = value
        if extra:
            kwargs["extra_body"] = extra  # e.g. top_k, repetition_penalty for TGI / vLLM
        if req.provider_stop:
            kwargs["stop"] = req.provider_stop
        response_format = _grammar_format(req.grammar) if req.grammar is not None else req.response_format
        if req.grammar is not None and req.response_format is not None:
            raise MessageError("pass either grammar or response_format, not both")
        if response_format is not None:
            kwargs["response_format"] = response_format
        if req.tools:
            kwargs["tools"] = req.tools
            if req.tool_choice is not None:
                kwargs["tool_choice"] = req.tool_choice
        if stream:
            kwargs["stream"] = True
            if "stream_options" in self._sdk_params:
                kwargs["stream_options"] = {"include_usage": True}
        return kwargs

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        try:
            kwargs = self._call_kwargs(req, stream=False)
            with self._call_client() as client:
                return wire.parse_completion(client.chat_completion(**kwargs))
        except Exception as exc:
            raise self._translate(exc) from exc

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        try:
            kwargs = self._call_kwargs(req, stream=True)
            with self._call_client() as client:  # closing it ends the HTTP response, even if abandoned
                yield from wire.iter_stream(client.chat_completion(**kwargs))
        except Exception as exc:
            raise self._translate(exc) from exc

    async def _agenerate(self, req: GenerationRequest) -> ChatMessage:
        try:
            kwargs = self._call_kwargs(req, stream=False)
            async with self._acall_client() as client:
                return wire.parse_completion(await client.chat_completion(**kwargs))
        except Exception as exc:
            raise self._translate(exc) from exc

    async def _agenerate_stream(self, req: GenerationRequest) -> AsyncIterator[ChatMessageStreamDelta]:
        try:
            kwargs = self._call_kwargs(req, stream=True)
            async with self._acall_client() as client:  # closing it ends the HTTP response
                async for delta in wire.aiter_stream(await client.chat_completion(**kwargs)):
                    yield delta
        except Exception as exc:
            raise self._translate(exc) from exc

    # ------------------------------------------------------------------ errors

    def _endpoint(self) -> str:
        return self.spec.base_url or "https://router.huggingface.co"

    def _auth_hint(self) -> str:
        if self.spec.token is None and not is_hf_host(self.spec.base_url):
            return (
                " (HF_TOKEN is only sent to Hugging Face hosts; for this server set "
                "model.token=${oc.env:YOUR_KEY_VAR})"
            )
        return " (check the token: model.token or HF_TOKEN)"

    def _translate(self, exc: Exception) -> Exception:
        """huggingface_hub / httpx exceptions -> one BackendError with status, secrets scrubbed."""
        if isinstance(exc, ModelFactoryError):
            return exc
        from huggingface_hub import errors as hub_errors

        if isinstance(exc, hub_errors.HfHubHTTPError):
            headers = getattr(exc.response, "headers", None)
            return api.status_error(self, exc.response.status_code, _server_message(exc), headers)
        if isinstance(exc, hub_errors.OfflineModeIsEnabled):  # a ConnectionError: before transport errors
            return self._provider_error(
                "huggingface_hub is in offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE was set when it "
                f"was imported) and refuses every request, even to {self._endpoint()}: unset it for HfApiModel"
            )
        if isinstance(exc, hub_errors.InferenceTimeoutError):
            return api.timeout_error(self)
        if isinstance(exc, hub_errors.TextGenerationError):  # an error event inside a stream
            retryable = isinstance(exc, hub_errors.OverloadedError)
            return self._provider_error(f"{type(exc).__name__}: {exc}", retryable=retryable)
        translated = api.transport_error(self, exc, self._endpoint())
        if translated is not None:
            return translated
        if isinstance(exc, json.JSONDecodeError):  # complete, but not JSON: retrying will not fix it
            return self._provider_error(f"the server's reply is not valid JSON ({exc})")
        return exc


InferenceClientModel = HfApiModel


def _grammar_format(grammar: Any) -> dict[str, Any]:
    """TGI's grammar as a ``response_format``: a regex string, or ``{"type": "json"|"regex", "value": ...}``."""
    if isinstance(grammar, str):
        return {"type": "regex", "value": grammar}
    if isinstance(grammar, Mapping) and isinstance(grammar.get("type"), str) and "value" in grammar:
        return dict(grammar)
    raise MessageError(
        "grammar must be a regex string or a dict like {'type': 'json', 'value': <JSON schema>} / "
        f"{{'type': 'regex', 'value': <pattern>}}, got {grammar!r:.80}"
    )


def _server_message(exc: Any) -> str:
    """The provider's own error text: OpenAI ``{"error": {"message": ...}}``, TGI ``{"error": ...}``, ..."""
    try:
        data = exc.response.json()
    except Exception:
        data = None
    if isinstance(data, Mapping):
        err = data.get("error", data)
        if isinstance(err, Mapping):
            err = err.get("message") or err.get("detail")
        if isinstance(err, str) and err:
            return err
        if isinstance(data.get("detail"), str):
            return str(data["detail"])
    server = getattr(exc, "server_message", None)
    return str(server) if server else str(exc).splitlines()[0]
