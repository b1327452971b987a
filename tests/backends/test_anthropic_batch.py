"""Anthropic Message Batches results, per error type: which failed items may be tried again online.

Against the local Anthropic batch server (tests/servers/anthropic_batches.py), which reports each
documented error type as Anthropic does in a results file (checked against the SDK's types in
tests/test_fakes_match_providers.py)."""

from __future__ import annotations

import pytest

from modelfactory import LiteLLMModel
from modelfactory.errors import BackendError
from tests.servers.anthropic_batches import ERROR_MESSAGES, AnthropicBatchServer

pytestmark = pytest.mark.server

# Anthropic's 429 / 500 / 504 / 529: a later try can succeed. Every other type is the request's fault.
TRANSIENT = {"rate_limit_error", "api_error", "timeout_error", "overloaded_error"}


def test_each_error_type_is_retryable_or_not_as_anthropic_means_it() -> None:
    assert set(ERROR_MESSAGES) > TRANSIENT  # the fake knows every type the test expects
    with AnthropicBatchServer() as server:
        server.outcomes = {f"id-{kind.replace('_', '-')}": f"errored:{kind}" for kind in ERROR_MESSAGES}
        server.outcomes["plain"] = "errored"  # the default: an invalid_request_error
        adapter = LiteLLMModel(model_id="anthropic/claude-test", api_base=server.url, api_key=server.api_key)
        adapter = adapter.batch_adapter()
        assert adapter is not None
        params = {"model": "claude-test", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        lines = [{"custom_id": cid, "params": params} for cid in [*server.outcomes, "fine"]]
        results = dict(
            adapter.results(adapter.submit(lines, on_file=lambda _: None, token="t", file_id=None))
        )
    assert set(results) == {*server.outcomes, "fine"}
    assert not isinstance(results.pop("fine"), Exception)
    for cid, outcome in server.outcomes.items():
        kind = outcome.partition(":")[2] or "invalid_request_error"
        err = results[cid]
        assert isinstance(err, BackendError), (cid, err)
        assert err.retryable is (kind in TRANSIENT), (kind, err.retryable)
        assert f"{kind}: {ERROR_MESSAGES[kind]}" in str(err)
