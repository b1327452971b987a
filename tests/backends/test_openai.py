"""OpenAIServerModel on the wire, against the real recording server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelfactory.backends.openai import OpenAIServerModel
from modelfactory.errors import BackendError, ConfigError, MissingDependencyError
from modelfactory.messages import TokenUsage, ToolCallStreamDelta, agglomerate_stream_deltas
from modelfactory.secrets import REDACTED
from tests.servers.recording import RecordingServer

KEY = "sk-explicit-KEY-1111222233334444"
ENV_KEY = "sk-env-KEY-5555666677778888"
MSGS = [{"role": "user", "content": "Say hello"}]
REPO = Path(__file__).resolve().parents[2]


def make(server: RecordingServer, **kwargs: Any) -> OpenAIServerModel:
    kwargs.setdefault("model_id", "test-model")
    kwargs.setdefault("max_retries", 0)
    return OpenAIServerModel(api_base=f"{server.url}/v1", **kwargs)


def mock_openai_client(handler: Any) -> dict[str, Any]:
    """client_kwargs that route api.openai.com to an in-process handler: no traffic leaves the process."""
    return {"http_client": httpx.Client(transport=httpx.MockTransport(handler))}


def completion_json(content: str = "ok", **message: Any) -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }


# --------------------------------------------------------------------------- request shape


def test_basic_request_on_the_wire(recording_server: RecordingServer) -> None:
    m = make(recording_server, api_key=KEY)
    out = m.generate(MSGS)
    rec = recording_server.last
    assert rec.method == "POST"
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {KEY}"
    assert rec.body == {"model": "test-model", "messages": [{"role": "user", "content": "Say hello"}]}
    assert out.role == "assistant"
    assert out.content == "Hello from the recording server"
    assert out.token_usage == TokenUsage(5, 7)
    assert out.raw is not None
    assert out.raw.id == "chatcmpl-rec"


def test_messages_are_normalised_before_sending(recording_server: RecordingServer) -> None:
    m = make(recording_server)
    m.generate(
        [
            {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "tool-call", "content": "called f"},
            {"role": "tool-response", "content": "f: 1"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "look"}, {"type": "image", "image": "QUJD"}],
            },
        ]
    )
    assert recording_server.last.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "assistant", "content": "called f"},
        {"role": "user", "content": "f: 1"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
            ],
        },
    ]


def test_stop_is_sent_when_supported(recording_server: RecordingServer) -> None:
    recording_server.reply = "Thought: go\nObservation: secret tail"
    m = make(recording_server)
    out = m.generate(MSGS, stop_sequences=["Observation:", "<end>"])
    assert recording_server.last.body["stop"] == ["Observation:", "<end>"]
    assert out.content == "Thought: go\n"


def test_stop_is_not_sent_when_unsupported_but_output_is_trimmed(recording_server: RecordingServer) -> None:
    recording_server.reply = "Thought: go\nObservation: secret tail"
    m = make(recording_server, supports_stop=False)
    out = m.generate(MSGS, stop_sequences=["Observation:"])
    assert "stop" not in recording_server.last.body
    assert out.content == "Thought: go\n"
    deltas = list(m.generate_stream(MSGS, stop_sequences=["Observation:"]))
    assert "stop" not in recording_server.last.body
    assert "".join(d.content or "" for d in deltas) == "Thought: go\n"


def test_no_stop_key_without_stop_sequences(recording_server: RecordingServer) -> None:
    make(recording_server).generate(MSGS, stop_sequences=[])
    assert "stop" not in recording_server.last.body


def test_generation_params_from_config_and_per_call(recording_server: RecordingServer) -> None:
    m = make(recording_server, temperature=0.2, max_tokens=10, top_p=0.9, seed=42)
    m.generate(MSGS)
    body = recording_server.last.body
    assert (body["temperature"], body["max_tokens"], body["top_p"], body["seed"]) == (0.2, 10, 0.9, 42)
    m.generate(MSGS, temperature=1.3, max_tokens=77, top_p=0.5, seed=7)
    body = recording_server.last.body
    assert (body["temperature"], body["max_tokens"], body["top_p"], body["seed"]) == (1.3, 77, 0.5, 7)
    m.generate(MSGS)
    assert recording_server.last.body["temperature"] == 0.2


def test_unset_params_are_not_sent(recording_server: RecordingServer) -> None:
    make(recording_server).generate(MSGS)
    for key in ("temperature", "max_tokens", "top_p", "seed", "stop", "stream"):
        assert key not in recording_server.last.body


def test_generation_kwargs_extras_land_in_the_body(recording_server: RecordingServer) -> None:
    m = make(
        recording_server, generation_kwargs={"top_k": 20, "repetition_penalty": 1.1, "presence_penalty": 0.5}
    )
    m.generate(MSGS, min_p=0.05, top_k=3)
    body = recording_server.last.body
    assert body["top_k"] == 3
    assert body["repetition_penalty"] == 1.1
    assert body["presence_penalty"] == 0.5
    assert body["min_p"] == 0.05
    assert "extra_body" not in body


def test_response_format_and_tools_on_the_wire(recording_server: RecordingServer) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    make(recording_server).generate(MSGS, response_format={"type": "json_object"}, tools_to_call_from=[tool])
    body = recording_server.last.body
    assert body["response_format"] == {"type": "json_object"}
    assert body["tools"] == [tool]


def test_tool_calls_in_the_reply_are_parsed(recording_server: RecordingServer) -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"q": "x"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "raw", "arguments": "not json"}},
    ]
    recording_server.enqueue(200, completion_json(None, tool_calls=calls))
    out = make(recording_server).generate(MSGS)
    assert out.content is None
    assert out.tool_calls is not None
    assert [(t.id, t.function.name, t.function.arguments) for t in out.tool_calls] == [
        ("call_1", "search", {"q": "x"}),
        ("call_2", "raw", "not json"),
    ]
    assert out.token_usage == TokenUsage(1, 2)


# --------------------------------------------------------------------------- keys


def test_openai_env_key_is_not_sent_to_a_local_server(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    make(recording_server).generate(MSGS)
    assert recording_server.last.headers["authorization"] == "Bearer EMPTY"
    assert ENV_KEY not in str(recording_server.last.headers)


def test_explicit_key_is_sent_to_a_local_server(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    make(recording_server, api_key=KEY).generate(MSGS)
    assert recording_server.last.headers["authorization"] == f"Bearer {KEY}"


def test_openai_env_key_is_sent_to_api_openai_com(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion_json("from openai"))

    m = OpenAIServerModel(model_id="gpt-4o", max_retries=0, client_kwargs=mock_openai_client(handler))
    assert m.generate(MSGS).content == "from openai"
    assert str(seen[0].url) == "https://api.openai.com/v1/chat/completions"
    assert seen[0].headers["authorization"] == f"Bearer {ENV_KEY}"


def test_openai_base_url_and_key_from_the_environment_go_together(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The openai SDK's pairing, used for every OpenAI-compatible gateway: both set in the environment,
    the env key goes to the env base URL (a config-given api_base still gets a placeholder)."""
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{recording_server.url}/v1/")
    assert OpenAIServerModel(model_id="gpt-4o", max_retries=0).generate(MSGS).content
    assert recording_server.last.path == "/v1/chat/completions"
    assert recording_server.last.headers["authorization"] == f"Bearer {ENV_KEY}"
    with RecordingServer() as other:  # a config names another server: the env key stays home
        OpenAIServerModel(model_id="gpt-4o", api_base=f"{other.url}/v1", max_retries=0).generate(MSGS)
        assert other.last.headers["authorization"] == "Bearer EMPTY"
    monkeypatch.delenv("OPENAI_API_KEY")  # a keyless local server named by the environment
    OpenAIServerModel(model_id="gpt-4o", max_retries=0).generate(MSGS)
    assert recording_server.last.headers["authorization"] == "Bearer EMPTY"


def test_401_from_the_env_base_url_points_at_the_env_key(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{recording_server.url}/v1")
    recording_server.enqueue(401, {"error": {"message": "invalid key", "type": "invalid_request_error"}})
    with pytest.raises(
        BackendError, match=r"invalid key \(check the API key: model.api_key or OPENAI_API_KEY\)"
    ):
        OpenAIServerModel(model_id="gpt-4o", max_retries=0).generate(MSGS)


def test_no_key_for_api_openai_com_is_a_config_error() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json=completion_json())

    for api_base in (None, "https://api.openai.com/v1"):
        with pytest.raises(ConfigError) as info:
            OpenAIServerModel(model_id="gpt-4o", api_base=api_base, client_kwargs=mock_openai_client(handler))
        (problem,) = info.value.problems
        assert problem.key == "api_key"
        assert "no API key for api.openai.com" in problem.problem
        assert "OPENAI_API_KEY" in problem.fix
    assert calls == []


def test_empty_api_key_counts_as_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no API key"):
        OpenAIServerModel(model_id="gpt-4o", api_key="")


def test_bad_api_base_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        OpenAIServerModel(model_id="m", api_base="127.0.0.1:8000/v1")
    assert info.value.problems[0].key == "api_base"
    assert "http(s) URL" in info.value.problems[0].problem


def test_model_dict_never_holds_the_key(recording_server: RecordingServer) -> None:
    m = make(recording_server, api_key=KEY)
    assert KEY not in repr(m.to_dict())
    assert m.to_dict()["api_base"] == f"{recording_server.url}/v1"
    assert KEY not in repr(m)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(401, False), (429, True), (500, True)],
)
def test_http_errors_become_backend_errors(
    recording_server: RecordingServer, status: int, retryable: bool
) -> None:
    recording_server.enqueue(status, {"error": {"message": f"provider says no (key {KEY})", "type": "x"}})
    m = make(recording_server, api_key=KEY)
    with pytest.raises(BackendError) as info:
        m.generate(MSGS)
    err = info.value
    assert err.status == status
    assert err.retryable is retryable
    assert f"(HTTP {status})" in str(err)
    assert "provider says no (key ***)" in str(err)
    assert KEY not in str(err)
    assert KEY not in repr(err.args)
    assert err.model_id == "test-model"
    assert err.backend == "OpenAIServerModel"
    assert len(recording_server.requests) == 1  # max_retries=0: no hidden retries


def test_401_names_where_the_key_comes_from(recording_server: RecordingServer) -> None:
    recording_server.enqueue(401, {"error": {"message": "invalid key", "type": "invalid_request_error"}})
    with pytest.raises(BackendError, match=r"invalid key \(OPENAI_API_KEY is only sent to api.openai.com"):
        make(recording_server).generate(MSGS)


def test_error_with_a_plain_string_body(recording_server: RecordingServer) -> None:
    recording_server.enqueue(503, {"error": "overloaded", "error_type": "overloaded"})  # TGI's shape
    with pytest.raises(BackendError, match="overloaded") as info:
        make(recording_server).generate(MSGS)
    assert info.value.status == 503


def test_env_key_is_scrubbed_from_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": f"bad key {request.headers['authorization']}"}})

    m = OpenAIServerModel(model_id="gpt-4o", max_retries=0, client_kwargs=mock_openai_client(handler))
    with pytest.raises(BackendError) as info:
        m.generate(MSGS)
    assert info.value.status == 401
    assert ENV_KEY not in str(info.value)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_fails_fast() -> None:
    port = _closed_port()
    sent: list[str] = []
    client = httpx.Client(event_hooks={"request": [lambda request: sent.append(str(request.url))]})
    m = OpenAIServerModel(
        model_id="m",
        api_base=f"http://127.0.0.1:{port}/v1",
        max_retries=0,
        api_key=KEY,
        client_kwargs={"http_client": client},
    )
    with pytest.raises(BackendError) as info:
        m.generate(MSGS)
    assert sent == [f"http://127.0.0.1:{port}/v1/chat/completions"]  # one try: neither we nor the SDK retried
    err = info.value
    assert err.attempts == 1
    assert f"cannot connect to http://127.0.0.1:{port}/v1" in str(err)
    assert err.retryable is True
    assert err.status is None
    assert KEY not in str(err)
    with pytest.raises(BackendError, match="cannot connect"):
        list(m.generate_stream(MSGS))


def test_timeout_is_a_backend_error(recording_server: RecordingServer) -> None:
    recording_server.enqueue(200, completion_json("late"), delay=1.0)
    m = make(recording_server, timeout=0.2)
    with pytest.raises(BackendError, match=r"timed out after 0.2s") as info:
        m.generate(MSGS)
    assert info.value.retryable is True


def test_empty_choices_is_a_backend_error(recording_server: RecordingServer) -> None:
    body = completion_json()
    body["choices"] = []
    recording_server.enqueue(200, body)
    with pytest.raises(BackendError, match="no choices") as info:
        make(recording_server).generate(MSGS)
    assert info.value.status is None
    assert info.value.model_id == "test-model"


# --------------------------------------------------------------------------- streaming


def test_stream_deltas_join_to_the_reply_with_final_usage(recording_server: RecordingServer) -> None:
    recording_server.reply = "A streamed reply, in several small chunks."
    deltas = list(make(recording_server).generate_stream(MSGS, temperature=0.5))
    body = recording_server.last.body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.5
    assert "".join(d.content or "" for d in deltas) == recording_server.reply
    assert len([d for d in deltas if d.content]) > 1
    assert deltas[-1].token_usage == TokenUsage(5, 7)
    assert sum(d.token_usage is not None for d in deltas) == 1


def test_stream_with_stop(recording_server: RecordingServer) -> None:
    recording_server.reply = "abc<end>def"
    deltas = list(make(recording_server).generate_stream(MSGS, stop_sequences=["<end>"]))
    assert recording_server.last.body["stop"] == ["<end>"]
    assert "".join(d.content or "" for d in deltas) == "abc"
    assert deltas[-1].token_usage == TokenUsage(5, 7)


def test_stream_http_error(recording_server: RecordingServer) -> None:
    recording_server.enqueue(429, {"error": {"message": "slow down", "type": "requests"}})
    with pytest.raises(BackendError, match="slow down") as info:
        list(make(recording_server).generate_stream(MSGS))
    assert info.value.status == 429


# --------------------------------------------------------------------------- client


def test_client_kwargs_are_kept(recording_server: RecordingServer) -> None:
    m = make(
        recording_server,
        client_kwargs={"default_headers": {"X-Team": "llm-eval"}, "default_query": {"v": "3"}},
    )
    m.generate(MSGS)
    assert recording_server.last.headers["x-team"] == "llm-eval"
    assert recording_server.last.query == {"v": "3"}
    # a header other than the public ones may carry a key, whatever its name: to_dict masks it, as it
    # masks api_key (issue 16, item 4); the model itself still sends it
    assert m.to_dict()["client_kwargs"] == {
        "default_headers": {"X-Team": REDACTED},
        "default_query": {"v": "3"},
    }


def test_organization_and_project_headers(recording_server: RecordingServer) -> None:
    make(recording_server, organization="org-1", project="proj-2").generate(MSGS)
    assert recording_server.last.headers["openai-organization"] == "org-1"
    assert recording_server.last.headers["openai-project"] == "proj-2"


def test_client_is_created_lazily(recording_server: RecordingServer) -> None:
    m = make(recording_server)
    transport = m._transport  # chosen once, at build time
    assert "client" not in transport.__dict__ and "client" not in m.__dict__
    assert recording_server.requests == []
    m.generate(MSGS)
    http_client = transport.__dict__["client"]
    m.generate(MSGS)
    assert m._transport is transport and transport.client is http_client  # one pool for every call
    assert len(recording_server.requests) == 2
    assert "client" not in m.__dict__  # the SDK's client is built only when asked for (m.client)


def test_a_call_never_imports_the_openai_sdk(recording_server: RecordingServer) -> None:
    """``import openai`` is ~1 s of a cold start: a plain call (and a stream) goes over HTTP without it."""
    code = (
        "import sys\n"
        "from modelfactory import OpenAIServerModel, AzureOpenAIServerModel\n"
        f"m = OpenAIServerModel('m', api_base='{recording_server.url}/v1', api_key='k')\n"
        "print(m([{'role': 'user', 'content': 'hi'}]).content)\n"
        "print(''.join(d.content or '' for d in m.generate_stream([{'role': 'user', 'content': 'hi'}])))\n"
        f"a = AzureOpenAIServerModel('d', azure_endpoint='{recording_server.url}', api_key='k', api_version='v')\n"
        "print(a([{'role': 'user', 'content': 'hi'}]).content)\n"
        "print(sorted(m for m in sys.modules if m == 'openai' or m.startswith('openai.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["Hello from the recording server"] * 3 + ["[]"]


SDK_ONLY = {"webhook_secret": "whsec_test"}  # a setting only the SDK's client has: calls go through it


@pytest.mark.parametrize("client_kwargs", [{}, SDK_ONLY], ids=["http", "sdk"])
def test_http_and_sdk_paths_send_and_read_the_same(
    recording_server: RecordingServer, client_kwargs: dict[str, Any]
) -> None:
    m = make(
        recording_server, api_key=KEY, organization="org-1", temperature=0.5, client_kwargs=client_kwargs
    )
    out = m.generate(MSGS, stop_sequences=["END"], top_k=4)
    rec = recording_server.last
    assert ("client" in m.__dict__) is bool(client_kwargs)
    # the transport was chosen once, when the model was built
    assert type(m._transport).__name__ == ("SDKTransport" if client_kwargs else "HTTPTransport")
    assert (rec.path, rec.headers["authorization"], rec.headers["openai-organization"]) == (
        "/v1/chat/completions",
        f"Bearer {KEY}",
        "org-1",
    )
    assert rec.body == {
        "model": "test-model",
        "messages": MSGS,
        "temperature": 0.5,
        "top_k": 4,
        "stop": ["END"],
    }
    assert (out.content, out.token_usage) == ("Hello from the recording server", TokenUsage(5, 7))
    assert out.raw.choices[0].finish_reason == "stop"  # the reply reads like the SDK's objects either way
    recording_server.reply = "one two<END>three"
    deltas = list(m.generate_stream(MSGS, stop_sequences=["<END>"]))
    assert "".join(d.content or "" for d in deltas) == "one two"
    assert deltas[-1].token_usage == TokenUsage(5, 7)
    recording_server.enqueue(
        429, {"error": {"message": "slow down", "type": "requests"}}, headers={"Retry-After": "7"}
    )
    with pytest.raises(BackendError) as info:
        m.generate(MSGS)
    err = info.value
    assert (err.status, err.retryable, err.retry_after) == (429, True, 7.0)
    assert "slow down" in str(err)
    recording_server.enqueue(401, {"error": {"message": f"bad key {KEY}", "type": "invalid_request_error"}})
    with pytest.raises(BackendError) as info:
        m.generate(MSGS)
    assert info.value.status == 401 and not info.value.retryable
    assert KEY not in str(info.value) and "check the API key" in str(info.value)


def test_construction_does_not_import_the_sdk() -> None:
    code = (
        "import sys\n"
        "from modelfactory.backends.openai import OpenAIServerModel\n"
        "m = OpenAIServerModel(model_id='m', api_base='http://127.0.0.1:9/v1')\n"
        "print('openai' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_missing_http_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx2", None)
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(MissingDependencyError, match=r"modelfactory\[openai\]"):
        OpenAIServerModel(model_id="m", api_base="http://127.0.0.1:1/v1", max_retries=0)(MSGS)


# --------------------------------------------------------------------------- the CA bundle, loaded once


@pytest.fixture
def ca_loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every CA bundle loaded into an SSL context from now on (the call goes through), our contexts
    forgotten first."""
    import ssl

    from modelfactory.backends import _openai_http

    monkeypatch.setattr(_openai_http, "_SSL_CONTEXTS", {}, raising=False)
    loads: list[tuple[Any, ...]] = []
    real = ssl.SSLContext.load_verify_locations

    def load(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args + tuple(kwargs.values()))
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", load)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return loads


def test_each_event_loop_does_not_load_the_ca_bundle_again(
    recording_server: RecordingServer, ca_loads: list[tuple[Any, ...]]
) -> None:
    """An async client is made per event loop; loading the CA bundle for each cost ~80 ms of CPU per
    asyncio.run (and per async run_items): one SSL context now serves every client of the process."""
    import asyncio

    model = make(recording_server)
    for _ in range(3):
        assert asyncio.run(model.agenerate(MSGS)).content
    assert model(MSGS).content
    assert len(ca_loads) == 1, ca_loads


def test_a_ca_named_by_the_environment_later_is_still_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ca_loads: list[tuple[Any, ...]]
) -> None:
    from modelfactory.backends import _openai_http
    from tests.servers.tls_intercept import make_certificates

    _openai_http.new_client(is_async=False)
    ca, _, _ = make_certificates(["127.0.0.1"], tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    _openai_http.new_client(is_async=True)
    assert str(ca) in ca_loads[-1], ca_loads
    ca.write_bytes(ca.read_bytes())  # the same file written again: read again
    os.utime(ca, ns=(ca.stat().st_atime_ns, ca.stat().st_mtime_ns + 1_000_000))
    n = len(ca_loads)
    _openai_http.new_client(is_async=False)
    assert len(ca_loads) == n + 1 and str(ca) in ca_loads[-1]


# --------------------------------------------------------------------------- what smolagents code relies on


def _sse_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


@st.composite
def streamed_calls(draw: st.DrawFn) -> tuple[list[tuple[str, str, str]], list[dict[str, Any]]]:
    """Parallel tool calls and the chunks a provider streams them in: OpenAI's numbering (index per call,
    pieces interleaved), every call at index 0 (one after the other), or no index at all."""
    n = draw(st.integers(1, 4))
    calls = [(f"call_{i}", f"tool_{i}", json.dumps({"x": draw(st.text(max_size=12))})) for i in range(n)]
    scheme = draw(st.sampled_from(["openai", "all-zero", "no-index"]))
    queues = []
    for i, (call_id, name, args) in enumerate(calls):
        cuts = sorted(draw(st.lists(st.integers(0, len(args)), max_size=3)))
        parts = [args[a:b] for a, b in zip([0, *cuts], [*cuts, len(args)], strict=True)]
        index = {"openai": i, "all-zero": 0, "no-index": None}[scheme]
        pieces = [{"id": call_id, "type": "function", "function": {"name": name, "arguments": parts[0]}}]
        pieces += [{"function": {"arguments": p}} for p in parts[1:]]
        if index is not None:
            pieces = [{"index": index, **p} for p in pieces]
        queues.append(pieces)
    order: list[dict[str, Any]] = []
    if scheme == "openai":  # interleaved, each call's own pieces in order
        while any(queues):
            i = draw(st.sampled_from([k for k, q in enumerate(queues) if q]))
            order.append(queues[i].pop(0))
    else:
        order = [p for q in queues for p in q]
    chunks = [_sse_chunk({"role": "assistant", "tool_calls": [p]}) for p in order]
    chunks.append(_sse_chunk({}, "tool_calls"))
    return calls, chunks


@settings(max_examples=30)
@given(case=streamed_calls())
def test_streamed_tool_calls_merge_by_index(
    case: tuple[list[tuple[str, str, str]], list[dict[str, Any]]],
) -> None:
    """Every streamed piece is a ToolCallStreamDelta (smolagents' ChatMessageToolCallStreamDelta) and the
    pieces merge by index into the calls the provider made, whatever its numbering (issue 23, item 1)."""
    calls, chunks = case
    with RecordingServer() as server:
        server.enqueue(200, chunks)
        deltas = list(make(server).generate_stream(MSGS, tools_to_call_from=[_TOOL]))
    pieces = [p for d in deltas for p in d.tool_calls or ()]
    assert pieces and all(isinstance(p, ToolCallStreamDelta) and isinstance(p.index, int) for p in pieces)
    assert all(isinstance(d.content, str) for d in deltas)  # `text += delta.content` works on each
    merged = agglomerate_stream_deltas(deltas)
    assert [(c.id, c.function.name, c.function.arguments) for c in merged.tool_calls or ()] == calls
    smolagents_models = pytest.importorskip("smolagents.models")  # and smolagents' own merge agrees
    theirs = smolagents_models.agglomerate_stream_deltas(deltas)  # in order of first appearance
    assert sorted((c.id, c.function.name, c.function.arguments) for c in theirs.tool_calls) == calls


_TOOL = {
    "type": "function",
    "function": {"name": "tool_0", "parameters": {"type": "object", "properties": {}}},
}


_PICK = {"type": "function", "function": {"name": "tool_0"}}


@pytest.mark.parametrize(
    ("call_kwargs", "configured", "sent"),
    [
        ({}, None, "required"),  # smolagents' default with tools
        ({"tool_choice": "auto"}, None, "auto"),
        ({"tool_choice": None}, None, None),  # None: none sent, as in smolagents
        ({}, "auto", "auto"),  # generation_kwargs.tool_choice
        ({"tool_choice": _PICK}, "auto", _PICK),  # the call wins
    ],
)
def test_tool_choice_is_sent_with_tools(
    recording_server: RecordingServer, call_kwargs: dict[str, Any], configured: Any, sent: Any
) -> None:
    """Issue 23, item 2."""
    extra = {"generation_kwargs": {"tool_choice": configured}} if configured else {}
    model = make(recording_server, **extra)
    model.generate(MSGS, tools_to_call_from=[_TOOL], **call_kwargs)
    assert recording_server.last.body.get("tool_choice") == sent
    model.generate(MSGS, **call_kwargs)  # without tools: never a tool_choice
    assert "tool_choice" not in recording_server.last.body and "tools" not in recording_server.last.body


def test_client_kwargs_max_retries_is_the_retry_policy(
    recording_server: RecordingServer, caplog: pytest.LogCaptureFixture, virtual_clock: Any
) -> None:
    """smolagents passes client_kwargs={"max_retries": 5} to the SDK: taken as retry.max_attempts=6, said
    once in the log; the SDK's own retries stay off (issue 23, item 4)."""
    from modelfactory import retry

    said_before = ("client_kwargs.max_retries", 5) in retry._SAID
    url = f"{recording_server.url}/v1"
    with caplog.at_level("WARNING", logger="modelfactory.retry"):
        model = OpenAIServerModel(model_id="m", api_base=url, client_kwargs={"max_retries": 5})
        OpenAIServerModel(model_id="m", api_base=url, client_kwargs={"max_retries": 5})
    assert model.spec.retry.max_attempts == 6 and "max_retries" not in model.spec.client_kwargs
    said = [r for r in caplog.records if "client_kwargs.max_retries=5" in r.getMessage()]
    assert len(said) == (0 if said_before else 1)  # once per process
    assert all("retry.max_attempts=6" in r.getMessage() for r in said)
    assert model.client.max_retries == 0  # the SDK's own retries: off
    for _ in range(6):
        recording_server.enqueue(503, {"error": {"message": "busy", "type": "server_error"}})
    with pytest.raises(BackendError, match="busy"):
        model.generate(MSGS)
    assert len(recording_server.requests) == 6  # the first request and 5 retries, by our policy
    with pytest.raises(ConfigError, match="client_kwargs.max_retries"):
        OpenAIServerModel(model_id="m", api_base=url, max_retries=1, client_kwargs={"max_retries": 5})
