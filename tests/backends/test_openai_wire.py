"""The chat-completions wire of OpenAI and Azure: what goes over it, as the recording server receives it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelfactory.backends.azure import AzureOpenAIServerModel
from modelfactory.backends.openai import OpenAIServerModel
from tests.servers.recording import RecordingServer

MSGS = [{"role": "user", "content": "hi"}]
SDK_ONLY = {"webhook_secret": "whsec_test"}  # a setting only the SDK's client has: calls go through it
HEADERS = {"X-Custom-Cred": "per-call-planted-7400", "X-Trace": "t-1"}


async def _async_calls(model: Any) -> None:
    await model.agenerate(MSGS, extra_headers=HEADERS)
    async for _ in model.agenerate_stream(MSGS, extra_headers=HEADERS):
        pass


@pytest.mark.parametrize("client_kwargs", [{}, SDK_ONLY], ids=["http", "sdk"])
@pytest.mark.parametrize("backend", ["openai", "azure"])
def test_per_call_extra_headers_go_in_the_headers_not_the_body(
    recording_server: RecordingServer, backend: str, client_kwargs: dict[str, Any]
) -> None:
    """Issue 22, item 9: ``generate(..., extra_headers={...})`` sends HTTP headers (as the SDK's
    ``create(extra_headers=...)`` does), on every path: plain HTTP and the SDK, sync and async, whole and
    streamed; the JSON body holds exactly the request's fields."""
    common: dict[str, Any] = {"api_key": "k-7401", "max_retries": 0, "client_kwargs": client_kwargs}
    model: Any
    if backend == "openai":
        model = OpenAIServerModel(model_id="m", api_base=f"{recording_server.url}/v1", **common)
    else:
        model = AzureOpenAIServerModel(
            model_id="m", azure_endpoint=recording_server.url, api_version="2024-10-21", **common
        )
    model.generate(MSGS, extra_headers=HEADERS, top_k=3)
    list(model.generate_stream(MSGS, extra_headers=HEADERS))
    asyncio.run(_async_calls(model))
    assert ("client" in model.__dict__ or "_aclient" in model.__dict__) is bool(client_kwargs)
    sent = recording_server.requests
    assert len(sent) == 4
    for rec in sent:
        assert rec.headers["x-custom-cred"] == "per-call-planted-7400"
        assert rec.headers["x-trace"] == "t-1"
        assert b"per-call-planted-7400" not in rec.raw and "extra_headers" not in rec.body
        # the model's own credential header is still there beside them
        assert rec.headers.get("authorization") == "Bearer k-7401" or rec.headers.get("api-key") == "k-7401"
    assert sent[0].body == {"model": "m", "messages": MSGS, "top_k": 3}
