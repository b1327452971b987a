"""``OpenAIServerModel``: any OpenAI-compatible chat-completions server (OpenAI, vLLM, TGI, proxies)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator

from ..errors import BackendError, MissingDependencyError, Problem
from ..messages import ChatMessage, ChatMessageStreamDelta
from ..model import GenerationRequest, Model
from ..settings import ModelSpec, env_field
from . import _openai_wire as wire

__all__ = ["OpenAIServerModel", "OpenAIServerSpec", "import_openai"]

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


class OpenAIClientSpec(ModelSpec):
    """Client settings shared by the OpenAI and Azure backends."""

    timeout: float = Field(120.0, gt=0, description="seconds before one request is abandoned")
    max_retries: int = Field(2, ge=0, description="retries of the SDK on connection errors, 429 and 5xx")
    client_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for the SDK client, kept as given"
    )


class OpenAIServerSpec(OpenAIClientSpec):
    api_base: str | None = env_field(
        None, env="OPENAI_BASE_URL", description="base URL of the server, e.g. http://127.0.0.1:8000/v1"
    )
    api_key: SecretStr | None = Field(
        None,
        description="API key; falls back to OPENAI_API_KEY only when api_base is OpenAI's own host",
    )
    organization: str | None = None
    project: str | None = None

    def problems(self) -> list[Problem]:
        if self.resolved_api_key() is None:
            return [
                Problem(
                    "api_key",
                    "no API key for api.openai.com",
                    "export OPENAI_API_KEY=... (or set model.api_key=${oc.env:MY_KEY_VAR} in the config)",
                )
            ]
        return []

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlparse(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL, e.g. http://127.0.0.1:8000/v1")
        return value

    def is_openai_host(self) -> bool:
        return self.api_base is None or urlparse(self.api_base).hostname in OPENAI_HOSTS

    def resolved_api_key(self) -> str | None:
        """The key to send. ``OPENAI_API_KEY`` is never sent to a third-party ``api_base``."""
        import os

        if self.api_key is not None and self.api_key.get_secret_value():
            return self.api_key.get_secret_value()
        if self.is_openai_host():
            return os.environ.get("OPENAI_API_KEY") or None
        return NO_KEY


class OpenAIServerModel(Model):
    """Chat completions over the openai SDK. The client is created on first use, not at build time."""

    Spec = OpenAIServerSpec
    spec: OpenAIServerSpec
    supports_response_format = True
    supports_tools = True

    @functools.cached_property
    def client(self) -> Any:
        openai = import_openai(type(self).__name__)
        spec = self.spec
        return openai.OpenAI(
            base_url=spec.api_base or OPENAI_BASE,
            api_key=spec.resolved_api_key(),
            organization=spec.organization,
            project=spec.project,
            timeout=spec.timeout,
            max_retries=spec.max_retries,
            **spec.client_kwargs,
        )

    def secret_values(self) -> list[str]:
        key = self.spec.resolved_api_key()
        return super().secret_values() + ([key] if key and key != NO_KEY else [])

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        try:
            response = self.client.chat.completions.create(
                **wire.chat_kwargs(self.model_id, req, stream=False)
            )
            return wire.parse_completion(response)
        except Exception as exc:
            raise self._translate(exc) from exc

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        try:
            stream = self.client.chat.completions.create(**wire.chat_kwargs(self.model_id, req, stream=True))
            yield from wire.iter_stream(stream)
        except Exception as exc:
            raise self._translate(exc) from exc

    def _auth_hint(self) -> str:
        if self.spec.api_key is None and not self.spec.is_openai_host():
            return (
                " (OPENAI_API_KEY is only sent to api.openai.com; for this server set "
                "model.api_key=${oc.env:YOUR_KEY_VAR})"
            )
        return " (check the API key: model.api_key or OPENAI_API_KEY)"

    def _translate(self, exc: Exception) -> Exception:
        """SDK exceptions -> one BackendError with status and the provider's message, secrets scrubbed."""
        if isinstance(exc, BackendError):
            return exc
        openai = import_openai(type(self).__name__)
        status = None
        retryable = False
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            retryable = status in (408, 409, 429) or status >= 500
            message = _provider_message(exc)
            if status in (401, 403):
                message += self._auth_hint()
        elif isinstance(exc, openai.APITimeoutError):
            message, retryable = f"timed out after {self.spec.timeout}s (model.timeout)", True
        elif isinstance(exc, openai.APIConnectionError):
            where = self._endpoint()
            message, retryable = f"cannot connect to {where}: {exc.__cause__ or exc}", True
        elif isinstance(exc, wire.EmptyReplyError):
            message, retryable = str(exc), True
        else:
            return exc
        return BackendError(
            self.redact(message),
            model_id=self.model_id,
            backend=type(self).__name__,
            status=status,
            retryable=retryable,
        )

    def _endpoint(self) -> str:
        return self.spec.api_base or OPENAI_BASE


def _provider_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return str(getattr(exc, "message", None) or exc)
