"""``AzureOpenAIServerModel``: Azure OpenAI deployments, configured the way the openai SDK reads Azure.

Endpoint, key and API version fall back to ``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_API_KEY`` and
``OPENAI_API_VERSION``, and the deployment to ``AZURE_OPENAI_MODEL``, so a config with only the env vars
set works. ``AZURE_OPENAI_AD_TOKEN`` (an Entra ID token) is read as the SDK reads it: instead of a key,
and before ``AZURE_OPENAI_API_KEY`` when the config names no key. ``api_version`` is always passed
explicitly (litellm, for one, ignores the env var).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pydantic import SecretStr, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from .._batchapi import BatchAdapter
from ..errors import Problem
from ..settings import check_http_url, env_field
from . import _api as api
from . import _openai_http as http
from .openai import OpenAIClientSpec, OpenAIServerModel, import_openai

__all__ = ["AzureOpenAIModel", "AzureOpenAIServerModel", "AzureOpenAIServerSpec"]


class AzureOpenAIServerSpec(OpenAIClientSpec):
    model_id: str = env_field(env="AZURE_OPENAI_MODEL", description="the Azure deployment name")
    azure_endpoint: str = env_field(
        env="AZURE_OPENAI_ENDPOINT", description="e.g. https://my-resource.openai.azure.com"
    )
    azure_ad_token: SecretStr | None = env_field(
        None, env="AZURE_OPENAI_AD_TOKEN", description="a Microsoft Entra ID token, instead of an API key"
    )
    api_key: SecretStr | None = env_field(
        None, env="AZURE_OPENAI_API_KEY", description="the resource's API key (or azure_ad_token)"
    )
    api_version: str = env_field(env="OPENAI_API_VERSION", description="e.g. 2024-10-21")
    azure_deployment: str | None = None

    own_client_args: ClassVar[dict[str, str]] = {
        **OpenAIClientSpec.own_client_args,
        "base_url": "model.azure_endpoint",
        "azure_endpoint": "model.azure_endpoint",
        "azure_deployment": "model.azure_deployment",
        "api_version": "model.api_version",
        "azure_ad_token": "model.azure_ad_token (or AZURE_OPENAI_AD_TOKEN)",
    }

    @field_validator("api_key")
    @classmethod
    def _key_or_token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """A key, an Entra ID token or a token provider (client_kwargs): what the openai SDK accepts. Checked
        here, not in ``problems``, so that it is reported with every other missing variable at once."""
        kwargs = info.data.get("client_kwargs") or {}
        if (
            value is None
            and info.data.get("azure_ad_token") is None
            and "azure_ad_token_provider" not in kwargs
        ):
            raise PydanticCustomError("missing", "required: an API key or AZURE_OPENAI_AD_TOKEN")
        return value

    def uses_token(self) -> bool:
        """The openai SDK's precedence: a key given in the config wins; otherwise AZURE_OPENAI_AD_TOKEN wins
        over AZURE_OPENAI_API_KEY (a token provider in client_kwargs over both)."""
        if "azure_ad_token_provider" in self.client_kwargs:
            return True
        if self.azure_ad_token is None:
            return False
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        return key is None or key == os.environ.get("AZURE_OPENAI_API_KEY")

    def problems(self) -> list[Problem]:
        return self.client_problems()

    @field_validator("azure_endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_http_url(value, "https://<resource>.openai.azure.com") or value


class AzureOpenAIServerModel(OpenAIServerModel):
    """Chat completions on an Azure deployment: ``model_id`` names the deployment."""

    Spec = AzureOpenAIServerSpec  # type: ignore[assignment]
    spec: AzureOpenAIServerSpec  # type: ignore[assignment]

    def _make_client(self, *, is_async: bool) -> Any:
        openai = import_openai(type(self).__name__)
        spec = self.spec
        auth: dict[str, str] = {}  # nothing: a token provider in client_kwargs
        if spec.uses_token() and spec.azure_ad_token is not None:
            auth["azure_ad_token"] = spec.azure_ad_token.get_secret_value()
        elif not spec.uses_token() and spec.api_key is not None:
            auth["api_key"] = spec.api_key.get_secret_value()
        args = dict(
            azure_endpoint=spec.azure_endpoint,
            azure_deployment=spec.azure_deployment or spec.model_id,
            **auth,
            api_version=spec.api_version,
            timeout=spec.timeout,
            max_retries=0,  # retries are the model's policy (spec.retry), never stacked on the SDK's
            **spec.client_kwargs,
        )
        args = (
            api.async_client_args(args)
            if is_async
            else {k: v for k, v in args.items() if k != "async_http_client"}
        )
        return (openai.AsyncAzureOpenAI if is_async else openai.AzureOpenAI)(**args)

    def _route(self) -> http.Route:
        """Azure's deployment route and auth, as ``openai.AzureOpenAI`` sends them."""
        spec = self.spec
        kwargs = spec.client_kwargs
        deployment = spec.azure_deployment or spec.model_id
        url = f"{spec.azure_endpoint.rstrip('/')}/openai/deployments/{deployment}/chat/completions"
        headers: dict[str, str] = {}
        for key, header in (("organization", "OpenAI-Organization"), ("project", "OpenAI-Project")):
            if kwargs.get(key):
                headers[header] = str(kwargs[key])
        provider = kwargs.get("azure_ad_token_provider")
        if provider is None and spec.uses_token() and spec.azure_ad_token is not None:
            headers["Authorization"] = f"Bearer {spec.azure_ad_token.get_secret_value()}"
        elif provider is None and spec.api_key is not None:
            headers["api-key"] = spec.api_key.get_secret_value()
        route = self._finish_route(url, headers, {"api-version": spec.api_version})
        route.token_provider = provider
        return route

    def secret_values(self) -> list[str]:
        return self.spec.secret_values()  # the key is a spec field here, never an env-only fallback

    def batch_adapter(self) -> BatchAdapter:
        """Azure OpenAI's Batch API (``/openai/files``, ``/openai/batches``, ``api-version`` on each call):
        each line's url and the batch endpoint are ``/chat/completions`` and its ``model`` the deployment."""
        from ._openai_batch import OpenAIBatches

        deployment = self.spec.azure_deployment or self.spec.model_id
        return OpenAIBatches(self, provider="azure", url="/chat/completions", model_name=deployment)

    def _auth_hint(self) -> str:
        if self.spec.uses_token():
            return " (check AZURE_OPENAI_AD_TOKEN / model.azure_ad_token)"
        return " (check AZURE_OPENAI_API_KEY / model.api_key)"

    def _endpoint(self) -> str:
        return self.spec.azure_endpoint


AzureOpenAIModel = AzureOpenAIServerModel  # smolagents' newer name for the same class
