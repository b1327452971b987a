"""LiteLLMRouterModel: litellm's real Router over deployments that are real local fake servers."""

from __future__ import annotations

from typing import Any

import pytest

from modelfactory import LiteLLMRouterModel
from modelfactory.errors import BackendError, ConfigError
from modelfactory.messages import TokenUsage
from tests.servers.recording import RecordingServer

MSGS = [{"role": "user", "content": "Say hello"}]
KEY = "sk-router-KEY-0123456789abcdef"
pytestmark = [
    pytest.mark.server,
    pytest.mark.filterwarnings("ignore:Item 'summary' on TypedDict:UserWarning"),
]


def _deployment(group: str, server: RecordingServer) -> dict[str, Any]:
    return {
        "model_name": group,
        "litellm_params": {"model": "openai/fake-model", "api_base": f"{server.url}/v1", "api_key": KEY},
    }


def test_router_spreads_a_group_over_its_deployments_with_the_call_contract() -> None:
    with RecordingServer(reply="hello STOP world") as one, RecordingServer(reply="hi STOP there") as two:
        model = LiteLLMRouterModel(
            model_id="group-1",
            model_list=[_deployment("group-1", one), _deployment("group-1", two)],
            client_kwargs={"routing_strategy": "simple-shuffle"},
            max_tokens=20,
        )
        replies = [model.generate(MSGS, stop_sequences=["STOP"]) for _ in range(12)]
    assert {r.content for r in replies} <= {"hello ", "hi "}
    assert one.requests and two.requests  # both deployments served (12 shuffles: 2 * 0.5**12 to fail)
    sent = (one.requests + two.requests)[0]
    assert sent.body["stop"] == ["STOP"] and sent.body["max_tokens"] == 20
    assert sent.body["messages"] == MSGS and sent.body["model"] == "fake-model"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert replies[0].token_usage == TokenUsage(5, 7)
    assert KEY not in repr(model.to_dict())  # the deployments' keys are redacted


def test_router_streams() -> None:
    with RecordingServer(reply="streamed reply") as server:
        model = LiteLLMRouterModel("g", model_list=[_deployment("g", server)])
        text = "".join(d.content or "" for d in model.generate_stream(MSGS))
    assert text == "streamed reply"
    assert server.requests[0].body["stream"] is True


def test_a_failing_deployment_is_a_backend_error_with_its_status() -> None:
    with RecordingServer(fail_rate=1.0, fail_status=429) as server:
        model = LiteLLMRouterModel("g", model_list=[_deployment("g", server)], retry={"max_attempts": 1})
        with pytest.raises(BackendError) as info:
            model.generate(MSGS)
    assert info.value.status == 429 and info.value.retryable
    assert len(server.requests) == 1  # the Router's own retries are off: our policy owns them


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"model_id": "nope"}, "model_id"),
        ({"model_list": [{"model_name": "g"}]}, "model_list"),
        ({"client_kwargs": {"num_retries": 3}}, "client_kwargs.num_retries"),
        ({"completion_kwargs": {"stop": ["x"]}}, "completion_kwargs.stop"),
    ],
)
def test_config_problems_name_the_key(kwargs: dict[str, Any], key: str) -> None:
    base: dict[str, Any] = {
        "model_id": "g",
        "model_list": [{"model_name": "g", "litellm_params": {"model": "openai/x"}}],
    }
    with pytest.raises(ConfigError) as info:
        LiteLLMRouterModel(**{**base, **kwargs})
    assert key in [p.key for p in info.value.problems]
