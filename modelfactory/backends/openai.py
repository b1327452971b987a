"""``OpenAIServerModel``: any OpenAI-compatible chat-completions server (OpenAI, vLLM, TGI, proxies)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any, ClassVar
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator

from .._batchapi import BatchAdapter
from ..errors import BackendError, MissingDependencyError, Problem
from ..messages import ChatMessage, ChatMessageStreamDelta
from ..model import GenerationRequest, Model
from ..retry import is_connect_error, sdk_retries_as_policy
from ..settings import ApiSpec, check_http_url, env_field
from . import _api as api
from . import _openai_http as http
from . import _openai_wire as wire
from ._openai_transport import HTTPTransport, OpenAITransport, SDKTransport, uses_sdk

__all__ = ["OpenAIModel", "OpenAIServerModel", "OpenAIServerSpec", "import_openai"]

OPENAI_HOSTS = ("api.openai.com",)
OPENAI_BASE = "https://api.openai.com/v1"
# Sent as the key to servers that need none (vLLM's convention); the SDK refuses an empty key.
NO_KEY = "EMPTY"


def import_openai(backend: str) -> Any:
    try:
        import openai
    except ImportError:
        raise MissingDependencyError("openai", "openai", backend) from None
    return openai


# Client arguments that have their own spec field (or must stay ours: the SDK's retries are off).
_OWN_CLIENT_ARGS = {
    "timeout": "model.timeout",
    "max_retries": "model.retry.max_attempts (the SDK's own retries stay off so they never stack)",
    "base_url": "model.api_base",
    "api_key": "model.api_key",
}


class OpenAIClientSpec(ApiSpec):
    """Client settings shared by the OpenAI and Azure backends."""

    retry_alias = "max_retries"
    sdk = ("openai", "openai")
    reasoning_style = "openai"
    cache_exclude = frozenset({"max_retries", "client_kwargs"})
    own_client_args: ClassVar[dict[str, str]] = _OWN_CLIENT_ARGS
    max_retries: int | None = Field(
        None,
        ge=0,
        description="deprecated alias of retry.max_attempts - 1 (retries after the first request)",
    )
    client_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for the SDK client, kept as given"
    )

    @model_validator(mode="before")
    @classmethod
    def _sdk_max_retries(cls, data: Any) -> Any:
        """``client_kwargs.max_retries`` (the openai client's, as smolagents passes it) is taken as
        ``max_retries``, i.e. ``retry.max_attempts = N + 1``; given with a different ``max_retries``, it
        stays in client_kwargs, where :meth:`client_problems` reports it."""
        if not isinstance(data, dict):
            return data
        client = data.get("client_kwargs")
        if not isinstance(client, dict) or "max_retries" not in client:
            return data
        retries = client["max_retries"]
        if data.get("max_retries") not in (None, retries):
            return data
        rest = {k: v for k, v in client.items() if k != "max_retries"}
        return {
            **data,
            "client_kwargs": rest,
            "max_retries": sdk_retries_as_policy("client_kwargs.max_retries", retries),
        }

    def client_problems(self) -> list[Problem]:
        return [
            Problem(f"client_kwargs.{key}", "has its own setting", f"use {fix}")
            for key, fix in type(self).own_client_args.items()
            if key in self.client_kwargs
        ]


class OpenAIServerSpec(OpenAIClientSpec):
    env_fallbacks = {"api_key": "OPENAI_API_KEY"}  # sent to api.openai.com only, see resolved_api_key
    env_fallbacks_unless = frozenset({"api_base"})
    api_base: str | None = env_field(
        None, env="OPENAI_BASE_URL", description="base URL of the server, e.g. http://127.0.0.1:8000/v1"
    )
    api_key: SecretStr | None = Field(
        None,
        description="API key; falls back to OPENAI_API_KEY only for OpenAI's own host or the base URL "
        "OPENAI_BASE_URL names (the environment's own pairing)",
    )
    organization: str | None = None
    project: str | None = None

    def problems(self) -> list[Problem]:
        out = self.client_problems()
        if self.resolved_api_key() is None:
            out.append(
                Problem(
                    "api_key",
                    "no API key for api.openai.com (env var OPENAI_API_KEY is not set)",
                    "export OPENAI_API_KEY=... (or set model.api_key=${oc.env:MY_KEY_VAR} in the config)",
                )
            )
        return out

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return check_http_url(value, "http://127.0.0.1:8000/v1")

    def is_openai_host(self) -> bool:
        return self.api_base is None or urlparse(self.api_base).hostname in OPENAI_HOSTS

    def base_from_env(self) -> bool:
        """True when ``api_base`` is the URL ``OPENAI_BASE_URL`` names: set together with ``OPENAI_API_KEY``,
        the two are the user's own pairing (the openai SDK's convention for every compatible gateway)."""
        import os

        env = (os.environ.get("OPENAI_BASE_URL") or "").rstrip("/")
        return bool(env) and (self.api_base or "").rstrip("/") == env

    def resolved_api_key(self) -> str | None:
        """The key to send. ``OPENAI_API_KEY`` goes to OpenAI's host and to the base URL the environment
        itself names; never to a third-party ``api_base`` given in a config (a placeholder goes there)."""
        import os

        if self.api_key is not None and self.api_key.get_secret_value():
            return self.api_key.get_secret_value()
        if self.is_openai_host():
            return os.environ.get("OPENAI_API_KEY") or None
        if self.base_from_env():
            return os.environ.get("OPENAI_API_KEY") or NO_KEY
        return NO_KEY


class OpenAIServerModel(Model):
    """Chat completions on any OpenAI-compatible server, over plain HTTP (or the openai SDK's client when
    ``client_kwargs`` need it). Clients are created on first use, not at build time."""

    Spec = OpenAIServerSpec
    spec: OpenAIServerSpec
    supports_response_format = True
    supports_tools = True

    def _client_args(self) -> dict[str, Any]:
        spec = self.spec
        return dict(
            base_url=spec.api_base or OPENAI_BASE,
            api_key=spec.resolved_api_key(),
            organization=spec.organization,
            project=spec.project,
            timeout=spec.timeout,
            max_retries=0,  # retries are the model's policy (spec.retry), never stacked on the SDK's
            **spec.client_kwargs,
        )

    def _make_client(self, *, is_async: bool) -> Any:
        openai = import_openai(type(self).__name__)
        args = self._client_args()
        args = (
            api.async_client_args(args)
            if is_async
            else {k: v for k, v in args.items() if k != "async_http_client"}
        )
        return (openai.AsyncOpenAI if is_async else openai.OpenAI)(**args)

    @functools.cached_property
    def client(self) -> Any:
        """The SDK's client (built on first use; calls go over plain HTTP unless client_kwargs need it)."""
        return self.create_client()

    def create_client(self) -> Any:
        """A new SDK client with this model's settings and the SDK's own retries off (smolagents' hook)."""
        return self._make_client(is_async=False)

    @property
    def aclient(self) -> Any:
        """The SDK's async client for the running event loop (created on first use in each loop: an
        httpx connection pool cannot outlive the loop that opened it)."""
        loop = asyncio.get_running_loop()
        cached = self.__dict__.get("_aclient")
        if cached is None or cached[0] is not loop:
            cached = (loop, self._make_client(is_async=True))
            self.__dict__["_aclient"] = cached
        return cached[1]

    def secret_values(self) -> list[str]:
        key = self.spec.resolved_api_key()
        return super().secret_values() + ([key] if key and key != NO_KEY else [])

    def batch_adapter(self) -> BatchAdapter:
        """OpenAI's Batch API (``/v1/files``, ``/v1/batches``): also what ``modelfactory serve`` speaks."""
        from ._openai_batch import OpenAIBatches

        return OpenAIBatches(self)

    # ------------------------------------------------------------------ the transport: chosen at build

    def __init__(self, /, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._transport: OpenAITransport = self._choose_transport()

    def _choose_transport(self) -> OpenAITransport:
        """Plain HTTP (see _openai_http: ~1 s less cold start) unless ``client_kwargs`` hold a setting only
        the SDK's client knows; then the SDK's client."""
        if uses_sdk(self.spec.client_kwargs):
            return SDKTransport(self)
        return HTTPTransport(self._route, self.spec.client_kwargs, self._http_error)

    def _route(self) -> http.Route:
        """Where a chat completion goes and with which headers, as ``openai.OpenAI`` would send it."""
        spec = self.spec
        kwargs = spec.client_kwargs
        headers: dict[str, str] = {}
        key = spec.resolved_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # The SDK reads OPENAI_ORG_ID / OPENAI_PROJECT_ID when none is given.
        org = spec.organization or kwargs.get("organization") or os.environ.get("OPENAI_ORG_ID")
        project = spec.project or kwargs.get("project") or os.environ.get("OPENAI_PROJECT_ID")
        if org:
            headers["OpenAI-Organization"] = str(org)
        if project:
            headers["OpenAI-Project"] = str(project)
        return self._finish_route(f"{(spec.api_base or OPENAI_BASE).rstrip('/')}/chat/completions", headers)

    def _finish_route(
        self, url: str, headers: dict[str, str], params: dict[str, str] | None = None
    ) -> http.Route:
        kwargs = self.spec.client_kwargs
        return http.Route(
            url=url,
            where=self._endpoint(),
            timeout=self.spec.timeout,
            headers={**headers, **{str(k): str(v) for k, v in (kwargs.get("default_headers") or {}).items()}},
            params={
                **(params or {}),
                **{str(k): str(v) for k, v in (kwargs.get("default_query") or {}).items()},
            },
            auth_hint=self._auth_hint(),
        )

    def _http_error(self, exc: Exception) -> Exception:
        if isinstance(exc, http.Failure):
            return self._provider_error(
                exc.message, status=exc.status, retryable=exc.retryable, retry_after=exc.retry_after
            )
        return self._provider_error(str(exc), retryable=True)  # an empty reply (no choices)

    # ------------------------------------------------------------------ calls: one way, whatever the transport

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        transport = self._transport
        try:
            return self._parse_reply(transport.post(self._body(req, stream=False)), req)
        except Exception as exc:
            raise transport.error(exc) from exc

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        transport = self._transport
        try:
            yield from self._parse_stream(transport.stream(self._body(req, stream=True)))
        except Exception as exc:
            raise transport.error(exc) from exc

    async def _agenerate(self, req: GenerationRequest) -> ChatMessage:
        transport = self._transport
        try:
            return self._parse_reply(await transport.apost(self._body(req, stream=False)), req)
        except Exception as exc:
            raise transport.error(exc) from exc

    async def _agenerate_stream(self, req: GenerationRequest) -> AsyncIterator[ChatMessageStreamDelta]:
        transport = self._transport
        chunks = transport.astream(self._body(req, stream=True))
        try:
            try:
                async for delta in self._aparse_stream(chunks):
                    yield delta
            finally:
                await chunks.aclose()  # an abandoned stream releases its connection
        except Exception as exc:
            raise transport.error(exc) from exc

    # What a reply and a stream are made of: chat completions here; the Responses API's subclass swaps these.

    def _parse_reply(self, raw: Any, req: GenerationRequest) -> ChatMessage:
        return wire.parse_completion(raw)

    def _parse_stream(self, chunks: Iterable[Any]) -> Iterator[ChatMessageStreamDelta]:
        return wire.iter_stream(chunks)

    def _aparse_stream(self, chunks: AsyncIterable[Any]) -> AsyncIterator[ChatMessageStreamDelta]:
        return wire.aiter_stream(chunks)

    def _body(self, req: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        return wire.request_body(self.model_id, req, stream=stream)

    def _auth_hint(self) -> str:
        if self.spec.api_key is None and not self.spec.is_openai_host() and not self.spec.base_from_env():
            return (
                " (OPENAI_API_KEY is only sent to api.openai.com and to the OPENAI_BASE_URL set with it; "
                "for this server set model.api_key=${oc.env:YOUR_KEY_VAR})"
            )
        return " (check the API key: model.api_key or OPENAI_API_KEY)"

    def _translate(self, exc: Exception) -> Exception:
        """SDK exceptions -> one BackendError with status and the provider's message, secrets scrubbed.

        Retryable by class and status only: 429/408/5xx, timeouts, connections refused or lost (a reset,
        a reply cut short), and a 200 with no choices. A reply that is not valid JSON is not retried.
        """
        if isinstance(exc, BackendError):
            return exc
        openai = import_openai(type(self).__name__)

        if isinstance(exc, openai.APIStatusError):
            headers = getattr(exc.response, "headers", None)
            return api.status_error(self, exc.status_code, _provider_message(exc), headers)
        if isinstance(exc, openai.APITimeoutError):
            return api.timeout_error(self)
        if isinstance(exc, openai.APIConnectionError):  # the SDK wraps the transport failure
            where = self._endpoint()
            cause = exc.__cause__
            if cause is None or is_connect_error(cause):
                message = api.connect_message(where, cause or exc)
            else:
                message = api.lost_message(where, cause, started=False)
            return self._provider_error(message, retryable=True)
        translated = api.transport_error(self, exc, self._endpoint())  # raw while a stream is read
        if translated is not None:
            return translated
        if isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError)):
            return self._provider_error(
                f"the server's reply is not a valid chat completion ({type(exc).__name__}: {exc})"
            )
        return exc

    def _endpoint(self) -> str:
        return self.spec.api_base or OPENAI_BASE


OpenAIModel = OpenAIServerModel  # smolagents' newer name for the same class


def _provider_message(exc: Any) -> str:
    body = getattr(exc, "body", None)  # openai >= 3 hands over body["error"] itself, often a bare string
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    elif isinstance(body, str) and body.strip():
        return body
    return str(getattr(exc, "message", None) or exc)
