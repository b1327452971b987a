"""``AmazonBedrockModel``: any chat model on Amazon Bedrock, through boto3's Converse API.

smolagents' class of the same name, with what it leaves out: stop sequences are sent
(``inferenceConfig.stopSequences``; the reply is trimmed at them anyway), tools go in ``toolConfig``
(native tool calls, ``tool_choice`` "required" as ``{"any": {}}``), and streams use ``converse_stream``.
System messages go in Converse's ``system`` field and consecutive turns of one role are merged (Converse
wants them alternating), so smolagents' "every role becomes user" default is not needed.

Credentials: boto3's own chain (``AWS_ACCESS_KEY_ID`` / profile / IAM role, or ``AWS_BEARER_TOKEN_BEDROCK``
for an API key); the region from ``client_kwargs.region_name`` or ``AWS_REGION`` / ``AWS_DEFAULT_REGION``.
boto3 is imported on first use; botocore's own retries are off (our ``retry`` policy owns them).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from ..errors import MissingDependencyError, ModelFactoryError, Problem
from ..messages import ChatMessage, ChatMessageStreamDelta
from ..model import GenerationRequest, Model
from ..retry import is_retryable_status
from ..settings import ApiSpec
from . import _api as api
from ._bedrock_wire import converse_request, iter_converse_stream, parse_converse

__all__ = ["AmazonBedrockModel", "AmazonBedrockSpec"]

# Converse arguments the adapter builds itself (from messages, stops, tools).
_RESERVED = frozenset({"modelId", "messages", "system", "toolConfig"})
# Error codes Bedrock answers without an HTTP status we can trust as retryable.
_RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ServiceUnavailableException",
        "ModelNotReadyException",
        "InternalServerException",
    }
)


class AmazonBedrockSpec(ApiSpec):
    sdk = ("boto3", "bedrock")
    cache_exclude = frozenset({"client_kwargs"})
    model_id: str = Field(description="a Bedrock model or inference-profile id, e.g. us.amazon.nova-pro-v1:0")
    client_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of boto3.client('bedrock-runtime', ...): region_name, endpoint_url, "
        "profile-free credentials (better from the environment)",
    )
    converse_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="extra Converse arguments passed as given: guardrailConfig, inferenceConfig defaults, "
        "additionalModelRequestFields, ...",
    )

    def problems(self) -> list[Problem]:
        return [
            Problem(
                f"converse_kwargs.{key}", "is set by the adapter", "pass messages / tools to the call instead"
            )
            for key in api.reserved_params(self.converse_kwargs, _RESERVED)
        ]

    def environment_problems(self) -> list[Problem]:
        out = super().environment_problems()
        if not (
            self.client_kwargs.get("region_name")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        ):
            out.append(
                Problem(
                    "client_kwargs.region_name",
                    "no AWS region (env var AWS_REGION / AWS_DEFAULT_REGION is not set)",
                    "export AWS_REGION=us-east-1 (or set model.client_kwargs.region_name)",
                )
            )
        return out


class AmazonBedrockModel(Model):
    """Chat through Bedrock's Converse API (``converse`` / ``converse_stream``)."""

    Spec = AmazonBedrockSpec
    spec: AmazonBedrockSpec
    supports_tools = True

    @functools.cached_property
    def client(self) -> Any:
        """The ``bedrock-runtime`` boto3 client, built on first use (smolagents' ``client``)."""
        return self.create_client()

    def create_client(self) -> Any:
        """smolagents' hook: ``boto3.client("bedrock-runtime", **client_kwargs)``, botocore's retries off
        and its read timeout set to ``timeout``."""
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise MissingDependencyError("boto3", "bedrock", type(self).__name__) from None
        kwargs = dict(self.spec.client_kwargs)
        ours = Config(retries={"total_max_attempts": 1}, read_timeout=self.spec.timeout)
        given = kwargs.pop("config", None)
        if isinstance(given, dict):
            given = Config(**given)
        kwargs["config"] = ours.merge(given) if given is not None else ours
        return boto3.client("bedrock-runtime", **kwargs)

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        kwargs = converse_request(self.model_id, req, self.spec.converse_kwargs)
        try:
            return parse_converse(self.client.converse(**kwargs))
        except Exception as exc:
            raise self._translate(exc) from exc

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        kwargs = converse_request(self.model_id, req, self.spec.converse_kwargs)
        try:
            yield from iter_converse_stream(self.client.converse_stream(**kwargs)["stream"])
        except Exception as exc:
            raise self._translate(exc) from exc

    def _endpoint(self) -> str:
        region = (
            self.spec.client_kwargs.get("region_name") or os.environ.get("AWS_REGION") or "the default region"
        )
        return f"Amazon Bedrock ({region})"

    def _auth_hint(self) -> str:
        return " (check the AWS credentials: AWS_ACCESS_KEY_ID / AWS_PROFILE / AWS_BEARER_TOKEN_BEDROCK)"

    def _translate(self, exc: Exception) -> Exception:
        """botocore's errors -> one BackendError: Bedrock's status and error code, throttling retryable."""
        if isinstance(exc, ModelFactoryError):
            return exc
        names = {c.__name__ for c in type(exc).__mro__}
        response = getattr(exc, "response", None)
        if "ClientError" in names and isinstance(response, dict):
            error = response.get("Error", {})
            meta = response.get("ResponseMetadata", {})
            status = meta.get("HTTPStatusCode")
            status = status if isinstance(status, int) else None
            code = str(error.get("Code", ""))
            message = f"{code}: {error.get('Message', exc)}"
            if status in (401, 403) or code in ("AccessDeniedException", "UnrecognizedClientException"):
                message += self._auth_hint()
            return self._provider_error(
                message,
                status=status,
                retryable=code in _RETRYABLE_CODES or is_retryable_status(status),
                retry_after=None,
            )
        if "NoCredentialsError" in names or "NoRegionError" in names:
            return self._provider_error(f"{exc}{self._auth_hint() if 'NoCredentialsError' in names else ''}")
        if names & {"ReadTimeoutError", "ConnectTimeoutError"}:
            return api.timeout_error(self)
        if names & {"EndpointConnectionError", "ConnectionClosedError"}:
            return self._provider_error(api.connect_message(self._endpoint(), exc), retryable=True)
        return exc
