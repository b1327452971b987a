"""AmazonBedrockModel on the wire: boto3's real bedrock-runtime client, its HTTP layer replaced by
botocore's Stubber (which checks every Converse argument against the service model and our expectation)."""

from __future__ import annotations

import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("boto3")

from botocore.stub import Stubber  # noqa: E402

from modelfactory import AmazonBedrockModel  # noqa: E402
from modelfactory.errors import BackendError, ConfigError  # noqa: E402
from modelfactory.factory import validate_config  # noqa: E402
from modelfactory.messages import TokenUsage  # noqa: E402
from modelfactory.testing import STOP_POLL_S  # noqa: E402

MODEL = "us.amazon.nova-pro-v1:0"
REGION = {
    "region_name": "us-east-1",
    "aws_access_key_id": "AKIDEXAMPLE",
    "aws_secret_access_key": "s3cr3t-KEY-xyz",
}


def _reply(content: list[dict[str, Any]], stop: str = "end_turn") -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {"inputTokens": 11, "outputTokens": 4, "totalTokens": 15},
        "metrics": {"latencyMs": 5},
    }


def _model(**kwargs: Any) -> tuple[AmazonBedrockModel, Stubber]:
    model = AmazonBedrockModel(MODEL, client_kwargs=REGION, **kwargs)
    stubber = Stubber(model.client)
    stubber.activate()
    return model, stubber


def test_generate_sends_system_stops_and_params_in_converse_shape() -> None:
    model, stubber = _model(max_tokens=50, temperature=0.3)
    expected = {
        "modelId": MODEL,
        "messages": [
            {"role": "user", "content": [{"text": "Hi"}, {"text": "and more"}]},  # merged: roles alternate
            {"role": "assistant", "content": [{"text": "Hello"}]},
            {"role": "user", "content": [{"text": "Count"}]},
        ],
        "system": [{"text": "Be brief"}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.3, "stopSequences": ["STOP"]},
    }
    stubber.add_response("converse", _reply([{"text": "1 2 3 STOP 4"}]), expected)
    reply = model.generate(
        [
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [{"type": "text", "text": "and more"}]},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Count"},
        ],
        stop_sequences=["STOP"],
    )
    stubber.assert_no_pending_responses()
    assert reply.content == "1 2 3 "  # trimmed at the stop even when the model runs past it
    assert reply.token_usage == TokenUsage(11, 4)


def test_tools_go_in_tool_config_and_tool_use_comes_back_as_tool_calls() -> None:
    model, stubber = _model()
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    expected = {
        "modelId": MODEL,
        "messages": [{"role": "user", "content": [{"text": "Weather in Paris?"}]}],
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "get_weather",
                        "description": "Weather in a city",
                        "inputSchema": {"json": tool["function"]["parameters"]},
                    }
                }
            ],
            "toolChoice": {"any": {}},  # smolagents' default tool_choice, "required"
        },
    }
    use = {"toolUse": {"toolUseId": "tu-1", "name": "get_weather", "input": {"city": "Paris"}}}
    stubber.add_response("converse", _reply([use], "tool_use"), expected)
    reply = model.generate([{"role": "user", "content": "Weather in Paris?"}], tools_to_call_from=[tool])
    assert reply.content is None
    assert reply.tool_calls is not None and len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == (
        "tu-1",
        "get_weather",
        {"city": "Paris"},
    )


def test_a_tool_turn_goes_back_as_tool_use_and_tool_result() -> None:
    model, stubber = _model()
    expected = {
        "modelId": MODEL,
        "messages": [
            {"role": "user", "content": [{"text": "Weather?"}]},
            {
                "role": "assistant",
                "content": [{"toolUse": {"toolUseId": "tu-1", "name": "w", "input": {"c": "P"}}}],
            },
            {
                "role": "user",
                "content": [{"toolResult": {"toolUseId": "tu-1", "content": [{"text": "sunny"}]}}],
            },
        ],
    }
    stubber.add_response("converse", _reply([{"text": "Sunny."}]), expected)
    calls = [{"id": "tu-1", "type": "function", "function": {"name": "w", "arguments": '{"c": "P"}'}}]
    reply = model.generate(
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "tu-1", "content": "sunny"},
        ]
    )
    assert reply.content == "Sunny."


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("ThrottlingException", 429, True),
        ("ValidationException", 400, False),
        ("AccessDeniedException", 403, False),
    ],
)
def test_errors_carry_status_code_and_retryability(code: str, status: int, retryable: bool) -> None:
    model, stubber = _model(retry={"max_attempts": 1})
    stubber.add_client_error(
        "converse", service_error_code=code, service_message="nope", http_status_code=status
    )
    with pytest.raises(BackendError) as info:
        model.generate([{"role": "user", "content": "Hi"}])
    err = info.value
    assert (err.status, err.retryable) == (status, retryable)
    assert code in str(err) and "s3cr3t-KEY-xyz" not in str(err)
    if status == 403:
        assert "AWS_ACCESS_KEY_ID" in str(err)


def test_retry_policy_retries_throttling() -> None:
    model, stubber = _model(retry={"max_attempts": 2, "initial_wait": 0.0, "max_wait": 0.0})
    stubber.add_client_error("converse", service_error_code="ThrottlingException", http_status_code=429)
    stubber.add_response("converse", _reply([{"text": "ok"}]))
    assert model.generate([{"role": "user", "content": "Hi"}]).content == "ok"
    stubber.assert_no_pending_responses()


def test_reserved_converse_kwargs_and_missing_region_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="converse_kwargs.toolConfig"):
        AmazonBedrockModel(MODEL, converse_kwargs={"toolConfig": {}})
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    problems = validate_config({"_target_": "AmazonBedrockModel", "model_id": MODEL}, environment=True)
    assert [p.key for p in problems] == ["client_kwargs.region_name"]
    assert "AWS_REGION" in problems[0].fix


def _event_message(event_type: str, payload: dict[str, Any]) -> bytes:
    """One AWS event-stream frame (prelude, CRCs, string headers, JSON payload), as Bedrock sends it."""
    headers = b""
    for name, value in (
        (":event-type", event_type),
        (":message-type", "event"),
        (":content-type", "application/json"),
    ):
        headers += (
            bytes([len(name)]) + name.encode() + b"\x07" + len(value).to_bytes(2, "big") + value.encode()
        )
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = total.to_bytes(4, "big") + len(headers).to_bytes(4, "big")
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    message = prelude + headers + body
    return message + zlib.crc32(message).to_bytes(4, "big")


class _Bedrock(BaseHTTPRequestHandler):
    """A local Bedrock runtime answering converse-stream with a fixed event stream, recording requests."""

    events: list[tuple[str, dict[str, Any]]] = []
    seen: list[tuple[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, body))
        data = b"".join(_event_message(kind, payload) for kind, payload in self.events)
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_stream_yields_text_tool_call_pieces_and_usage() -> None:
    from modelfactory.messages import agglomerate_stream_deltas

    """converse_stream over HTTP from a local server: botocore's own event-stream parser decodes it."""
    _Bedrock.events = [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Let me "}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "check. STOP here"}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        (
            "contentBlockStart",
            {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu-9", "name": "w"}}},
        ),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"c": '}}}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '"P"}'}}}),
        ("contentBlockStop", {"contentBlockIndex": 1}),
        ("messageStop", {"stopReason": "tool_use"}),
        (
            "metadata",
            {"usage": {"inputTokens": 9, "outputTokens": 6, "totalTokens": 15}, "metrics": {"latencyMs": 1}},
        ),
    ]
    _Bedrock.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Bedrock)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": STOP_POLL_S}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        model = AmazonBedrockModel(MODEL, client_kwargs={**REGION, "endpoint_url": url})
        deltas = list(
            model.generate_stream([{"role": "user", "content": "Weather?"}], stop_sequences=["STOP"])
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
    path, body = _Bedrock.seen[0]
    assert path.endswith("/converse-stream")
    assert body == {
        "messages": [{"role": "user", "content": [{"text": "Weather?"}]}],
        "inferenceConfig": {"stopSequences": ["STOP"]},
    }
    text = "".join(d.content or "" for d in deltas)
    assert text == "Let me check. "
    message = agglomerate_stream_deltas(deltas)
    assert message.tool_calls is not None
    assert (message.tool_calls[0].id, message.tool_calls[0].function.name) == ("tu-9", "w")
    assert message.tool_calls[0].function.arguments == '{"c": "P"}'
    assert message.token_usage == TokenUsage(9, 6)
