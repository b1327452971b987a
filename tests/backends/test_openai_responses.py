"""OpenAIResponsesModel on the wire (POST /v1/responses), against the real recording server on 127.0.0.1,
its requests and the fake's replies checked against the openai SDK's own types."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from modelfactory.backends.openai_responses import OpenAIResponsesModel
from modelfactory.errors import UnsupportedFeatureError
from tests.servers.recording import RecordingServer

MSGS = [{"role": "user", "content": "Say hello"}]
KEY = "sk-test-KEY-0123456789abcdef"
pytestmark = pytest.mark.server


def make(srv: RecordingServer, **kw: Any) -> OpenAIResponsesModel:
    kw.setdefault("model_id", "o4-mini")
    return OpenAIResponsesModel(api_base=f"{srv.url}/v1", api_key=KEY, retry={"max_attempts": 1}, **kw)


def _check_request(body: dict[str, Any]) -> None:
    from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming

    assert set(body) <= set(typing.get_type_hints(ResponseCreateParamsNonStreaming)), set(body)


@pytest.mark.parametrize("effort", ["low", "high"])
def test_reasoning_effort_summary_and_tokens(recording_server: RecordingServer, effort: str) -> None:
    from openai.types.responses import Response

    reply = make(recording_server, reasoning_effort=effort, max_tokens=50)(MSGS, stop_sequences=["llo"])
    body = recording_server.last.body
    assert recording_server.last.path == "/v1/responses"
    _check_request(body)
    assert body["reasoning"] == {"effort": effort, "summary": "auto"}
    assert body["max_output_tokens"] == 50 and "stop" not in body
    assert reply.content == "He"  # trimmed at the stop client-side: the API takes no `stop`
    assert reply.reasoning_content == "thought"
    assert reply.token_usage is not None and reply.token_usage.reasoning_tokens > 0
    Response.model_validate(recording_server.response(body))  # the fake speaks the SDK's type


def test_tools_and_structured_output_requests(recording_server: RecordingServer) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    schema = {"name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}
    from openai.types.responses import Response

    body = {  # the fake's reply with a function call in place of the text
        **recording_server.response({"model": "o4-mini", "input": MSGS}),
        "output": [
            {
                "id": "fc_1",
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
                "status": "completed",
            }
        ],
    }
    Response.model_validate(body)  # still the SDK's type
    recording_server.enqueue(200, body)
    model = make(recording_server)
    reply = model(MSGS, tools_to_call_from=[tool])
    body = recording_server.last.body
    _check_request(body)
    assert body["tools"][0] == {"type": "function", **tool["function"]}
    assert body["tool_choice"] == "required"
    assert reply.tool_calls is not None and reply.tool_calls[0].function.arguments == {"city": "Paris"}
    model(MSGS, response_format={"type": "json_schema", "json_schema": schema})
    body = recording_server.last.body
    _check_request(body)
    assert body["text"] == {"format": {"type": "json_schema", **schema}}


def test_streaming_is_refused_clearly(recording_server: RecordingServer) -> None:
    with pytest.raises(UnsupportedFeatureError, match="does not stream"):
        list(make(recording_server).generate_stream(MSGS))


def test_async_call_and_tool_results_as_input_items(recording_server: RecordingServer) -> None:
    import asyncio

    history = [
        *MSGS,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
            ],
        },
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ]
    reply = asyncio.run(make(recording_server, model_id="gpt-4.1").agenerate(history))
    assert reply.content
    items = recording_server.last.body["input"]
    assert items[1] == {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"x": 1}'}
    assert items[2] == {"type": "function_call_output", "call_id": "call_1", "output": "42"}
    _check_request(recording_server.last.body)
