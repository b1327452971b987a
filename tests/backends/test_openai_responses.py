"""OpenAIResponsesModel on the wire (POST /v1/responses), against the real recording server on 127.0.0.1,
its requests and the fake's replies checked against the openai SDK's own types."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest

from modelfactory.backends.openai_responses import OpenAIResponsesModel
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


SDK_ONLY = {"webhook_secret": "whsec_test"}  # a setting only the SDK's client has: calls go through it
PATHS = pytest.mark.parametrize("client_kwargs", [{}, SDK_ONLY], ids=["http", "sdk"])
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _check_stream_request(body: dict[str, Any]) -> None:
    from openai.types.responses.response_create_params import ResponseCreateParamsStreaming

    assert body["stream"] is True
    assert set(body) <= set(typing.get_type_hints(ResponseCreateParamsStreaming)), set(body)


def _sdk_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events``, each checked to be one of the SDK's ResponseStreamEvent types: no key it does not know,
    nothing coerced."""
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    for event in events:
        parsed = adapter.validate_python(event)
        assert not parsed.model_extra and parsed.model_dump(mode="json", exclude_unset=True) == event, event
    return events


def _events(srv: RecordingServer, response: dict[str, Any]) -> list[dict[str, Any]]:
    """The fake's stream of ``response``, checked against the SDK's types."""
    return _sdk_events(srv.response_events(response))


def _function_calls(srv: RecordingServer, *calls: tuple[str, str, str]) -> dict[str, Any]:
    """The fake's Responses reply with these (call_id, name, arguments) function calls as its output."""
    return {
        **srv.response({"model": "o4-mini", "input": MSGS}),
        "output": [
            {"id": f"fc_{i}", "type": "function_call", "call_id": cid, "name": name, "arguments": args}
            | {"status": "completed"}
            for i, (cid, name, args) in enumerate(calls)
        ],
    }


@PATHS
def test_stream_text_reasoning_and_usage(
    recording_server: RecordingServer, client_kwargs: dict[str, Any]
) -> None:
    """Text pieces, the reasoning summary apart, usage last; the stop cut client-side (the API takes no
    `stop`), on both transports: the same deltas."""
    from modelfactory.messages import agglomerate_stream_deltas

    recording_server.reply = "Hello world, and more"
    model = make(recording_server, reasoning_effort="low", client_kwargs=client_kwargs)
    assert type(model._transport).__name__ == ("SDKTransport" if client_kwargs else "HTTPTransport")
    deltas = list(model.generate_stream(MSGS, stop_sequences=[", and"]))
    rec = recording_server.last
    assert rec.path == "/v1/responses" and rec.headers["authorization"] == f"Bearer {KEY}"
    _check_stream_request(rec.body)
    assert "stop" not in rec.body and rec.body["reasoning"] == {"effort": "low", "summary": "auto"}
    assert "".join(d.content or "" for d in deltas) == "Hello world"
    assert "".join(d.reasoning_content or "" for d in deltas) == "thought"
    assert all(not (d.reasoning_content and d.content) for d in deltas)
    assert deltas[-1].token_usage is not None and deltas[-1].token_usage.reasoning_tokens == 3
    assert [d for d in deltas if d.token_usage is not None] == deltas[-1:]
    whole = agglomerate_stream_deltas(deltas)
    assert (whole.content, whole.reasoning_content) == ("Hello world", "thought")
    # the non-streamed call of the same model reads the same reply
    assert model(MSGS, stop_sequences=[", and"]).content == "Hello world"
    _events(recording_server, recording_server.response(rec.body))


@PATHS
def test_stream_parallel_tool_calls_merge_as_smolagents_merges_them(
    recording_server: RecordingServer, client_kwargs: dict[str, Any]
) -> None:
    smolagents = pytest.importorskip("smolagents.models")
    reply = _function_calls(
        recording_server,
        ("call_a", "get_weather", '{"city": "Paris"}'),
        ("call_b", "get_weather", '{"city": "Oslo, Norway"}'),
    )
    recording_server.enqueue(200, _events(recording_server, reply))
    model = make(recording_server, client_kwargs=client_kwargs)
    deltas = list(model.generate_stream(MSGS, tools_to_call_from=[WEATHER]))
    _check_stream_request(recording_server.last.body)
    pieces = [p for d in deltas for p in d.tool_calls or ()]
    assert {p.index for p in pieces} == {0, 1}
    firsts = [p for p in pieces if p.id]
    assert [(p.index, p.id, p.type, p.function.name) for p in firsts if p.function] == [
        (0, "call_a", "function", "get_weather"),
        (1, "call_b", "function", "get_weather"),
    ]
    assert len(pieces) > 4  # the arguments came in fragments, each on its call's index
    merged = smolagents.agglomerate_stream_deltas(
        [
            smolagents.ChatMessageStreamDelta(
                content=d.content,
                tool_calls=[
                    smolagents.ChatMessageToolCallStreamDelta(
                        index=p.index,
                        id=p.id,
                        type=p.type,
                        function=None
                        if p.function is None
                        else smolagents.ChatMessageToolCallFunction(
                            name=p.function.name or "", arguments=p.function.arguments or ""
                        ),
                    )
                    for p in d.tool_calls
                ]
                if d.tool_calls
                else None,
                token_usage=None,
            )
            for d in deltas
        ]
    )
    assert [(c.id, c.function.name, c.function.arguments) for c in merged.tool_calls or ()] == [
        ("call_a", "get_weather", '{"city": "Paris"}'),
        ("call_b", "get_weather", '{"city": "Oslo, Norway"}'),
    ]
    assert deltas[-1].token_usage is not None


def test_stream_arguments_sent_only_whole_are_not_lost(recording_server: RecordingServer) -> None:
    """A server that sends a call's arguments only in its item (no argument deltas) still gives them."""
    from modelfactory.messages import agglomerate_stream_deltas

    reply = _function_calls(recording_server, ("call_1", "get_weather", '{"city": "Rome"}'))
    events = _events(recording_server, reply)
    whole_only = [e for e in events if not e["type"].startswith("response.function_call_arguments")]
    recording_server.enqueue(200, _sdk_events(whole_only))
    whole = agglomerate_stream_deltas(
        make(recording_server).generate_stream(MSGS, tools_to_call_from=[WEATHER])
    )
    assert whole.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in whole.tool_calls] == [
        ("call_1", "get_weather", '{"city": "Rome"}')
    ]


@PATHS
def test_async_stream_posts_a_responses_body(
    recording_server: RecordingServer, client_kwargs: dict[str, Any]
) -> None:
    import asyncio

    async def collect() -> list[Any]:
        model = make(recording_server, model_id="gpt-4.1", client_kwargs=client_kwargs)
        return [d async for d in model.agenerate_stream(MSGS, stop_sequences=["llo"])]

    deltas = asyncio.run(collect())
    rec = recording_server.last
    assert rec.path == "/v1/responses" and "messages" not in rec.body and rec.body["input"] == MSGS
    _check_stream_request(rec.body)
    assert "".join(d.content or "" for d in deltas) == "He"
    assert deltas[-1].token_usage is not None and deltas[-1].token_usage.input_tokens == 5


@PATHS
def test_stream_errors_are_backend_errors(
    recording_server: RecordingServer, client_kwargs: dict[str, Any]
) -> None:
    from modelfactory.errors import BackendError

    model = make(recording_server, client_kwargs=client_kwargs)
    error = {
        "type": "error",
        "sequence_number": 0,
        "code": "invalid_prompt",
        "message": "bad prompt",
        "param": None,
    }
    created = _events(recording_server, recording_server.response({"input": MSGS}))[0]
    recording_server.enqueue(200, _sdk_events([created, error]))
    with pytest.raises(BackendError, match="bad prompt"):
        list(model.generate_stream(MSGS))
    failed = {
        **recording_server.response({"input": MSGS}),
        "status": "failed",
        "output": [],
        "error": {"code": "server_error", "message": "the model crashed"},
    }
    recording_server.enqueue(
        200, _sdk_events([{"type": "response.failed", "sequence_number": 0, "response": failed}])
    )
    with pytest.raises(BackendError, match="the model crashed"):
        list(model.generate_stream(MSGS))
    recording_server.enqueue(429, {"error": {"message": "slow down", "type": "rate_limit"}})
    with pytest.raises(BackendError, match="slow down"):
        list(model.generate_stream(MSGS))


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


def test_batch_mode_sends_responses_lines_and_reads_responses_replies(tmp_path: Path) -> None:
    """Provider batches (OpenAI's Batch API, the local fake of tests/servers/openai_batches.py):
    ``/v1/responses`` as the batch endpoint and every line's url, a Responses API body in each line (no
    `stop`: cut afterwards, as online), the replies read as the SDK's Response (text, reasoning tokens)."""
    from modelfactory.batch import BatchOptions
    from modelfactory.job.runner import run_items
    from tests.servers.openai_batches import BatchAPIServer

    items = [{"id": f"q{i}", "prompt": f"question {i} | tail"} for i in range(3)]
    with BatchAPIServer(api_key=KEY) as server:
        model = OpenAIResponsesModel(
            model_id="o4-mini",
            api_base=f"{server.url}/v1",
            api_key=KEY,
            reasoning_effort="high",
            max_tokens=64,
            retry={"max_attempts": 1},
        )
        stats = run_items(
            model,
            items,
            results_path=tmp_path / "results.jsonl",
            provider_batch=BatchOptions(poll_s=0.05, on_missing="error"),
            stop_sequences=[" |"],
            progress=False,
        )
        got = {r["id"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
        assert (stats.ok, stats.failed) == (3, 0), got
        (batch,) = server.batches.values()
        assert batch.endpoint == "/v1/responses" and server.submissions == 1
        assert {line["url"] for line in server.lines} == {"/v1/responses"}
        for line in server.lines:
            _check_request(line["body"])
            assert "messages" not in line["body"] and "stop" not in line["body"]
        (q1,) = [line["body"] for line in server.lines if line["custom_id"] == "q1"]
        assert q1 == {
            "model": "o4-mini",
            "input": [{"role": "user", "content": "question 1 | tail"}],
            "reasoning": {"effort": "high", "summary": "auto"},
            "max_output_tokens": 64,
        }
        assert got["q1"]["content"] == "echo: question 1"  # cut at the stop after the batch
        assert got["q1"]["usage"]["reasoning_tokens"] == 2 and got["q1"]["batch_id"] == batch.id


def test_per_call_headers_go_as_headers(recording_server: RecordingServer) -> None:
    for client_kwargs in ({}, SDK_ONLY):
        make(recording_server, client_kwargs=client_kwargs)(MSGS, extra_headers={"X-Trace": "t-1"})
        assert recording_server.last.headers["x-trace"] == "t-1"
        assert "extra_headers" not in recording_server.last.body
