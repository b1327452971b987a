"""HfApiModel (huggingface_hub.InferenceClient) on the wire, against the real recording server on 127.0.0.1."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

import modelfactory
from modelfactory.backends.hf_inference import HfApiModel, InferenceClientModel, is_hf_host
from modelfactory.errors import BackendError, ConfigError, MessageError, MissingDependencyError
from modelfactory.messages import TokenUsage
from tests.servers.recording import RecordingServer

ENV_TOKEN = "hf_ENVsecretTOKEN0123456789abcdef"
EXPLICIT = "tok-EXPLICIT-0123456789abcdef"
MSGS = [{"role": "user", "content": "Say hello"}]
REPO = Path(__file__).resolve().parents[2]
server = pytest.mark.server


@pytest.fixture(autouse=True)
def _hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub reads HF_HUB_OFFLINE once, at import, and then refuses every request (127.0.0.1
    included); the suite runs with it set, so these tests switch the imported flag off."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def make(srv: RecordingServer, **kwargs: Any) -> HfApiModel:
    kwargs.setdefault("model_id", "org/test-model")
    kwargs.setdefault("retry", {"max_attempts": 1})  # one request per call: retries are tested in test_faults
    return HfApiModel(base_url=srv.url, **kwargs)


def header_values(srv: RecordingServer) -> list[str]:
    return [v for rec in srv.requests for v in rec.headers.values()]


# --------------------------------------------------------------------------- request shape


@server
def test_request_shape(recording_server: RecordingServer) -> None:
    model = make(recording_server, temperature=0.3, max_tokens=12, top_p=0.9, seed=7)
    reply = model(MSGS, stop_sequences=["END"])
    rec = recording_server.last
    assert rec.method == "POST"
    assert rec.path == "/v1/chat/completions"
    body = rec.body
    assert body["model"] == "org/test-model"  # never the SDK's "dummy"
    assert body["messages"] == MSGS
    assert body["stop"] == ["END"]
    assert body["max_tokens"] == 12
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.9
    assert body["seed"] == 7
    assert reply.content == "Hello from the recording server"
    assert reply.token_usage == TokenUsage(5, 7)
    assert reply.raw is not None


@server
@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/", "/v1/chat/completions"])
def test_base_url_forms_reach_chat_completions(recording_server: RecordingServer, suffix: str) -> None:
    HfApiModel(model_id="m", base_url=recording_server.url + suffix)(MSGS)
    assert recording_server.last.path == "/v1/chat/completions"
    assert recording_server.last.body["model"] == "m"


@server
def test_per_call_kwargs_override_configured_defaults(recording_server: RecordingServer) -> None:
    make(recording_server, temperature=0.3, max_tokens=12)(MSGS, temperature=0.9, max_tokens=3)
    assert recording_server.last.body["temperature"] == 0.9
    assert recording_server.last.body["max_tokens"] == 3


@server
def test_stop_sequences_are_trimmed_even_if_the_server_ignores_them(
    recording_server: RecordingServer,
) -> None:
    reply = make(recording_server)(MSGS, stop_sequences=["record", "zz"])
    assert recording_server.last.body["stop"] == ["record", "zz"]
    assert reply.content == "Hello from the "


@server
def test_supports_stop_false_sends_no_stop(recording_server: RecordingServer) -> None:
    reply = make(recording_server, supports_stop=False)(MSGS, stop_sequences=["record"])
    assert "stop" not in recording_server.last.body
    assert reply.content == "Hello from the "


@server
def test_extra_generation_kwargs_travel_in_the_body(recording_server: RecordingServer) -> None:
    model = make(recording_server, generation_kwargs={"top_k": 5, "frequency_penalty": 0.25})
    model(MSGS, repetition_penalty=1.1)
    body = recording_server.last.body
    assert body["top_k"] == 5  # not a chat_completion parameter: sent through extra_body
    assert body["frequency_penalty"] == 0.25  # a named chat_completion parameter
    assert body["repetition_penalty"] == 1.1


@server
def test_reserved_per_call_kwarg_is_refused(recording_server: RecordingServer) -> None:
    with pytest.raises(MessageError, match="model"):
        make(recording_server)(MSGS, model="other")
    assert recording_server.requests == []


def test_reserved_generation_kwargs_are_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        HfApiModel(base_url="http://127.0.0.1:1", generation_kwargs={"stop": ["x"], "stream": True})
    keys = {p.key for p in info.value.problems}
    assert keys == {"generation_kwargs.stop", "generation_kwargs.stream"}


# --------------------------------------------------------------------------- token policy


@server
def test_env_token_is_never_sent_to_a_non_hf_base_url(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    model = make(recording_server)
    model(MSGS)
    "".join(d.content or "" for d in model.generate_stream(MSGS))
    assert len(recording_server.requests) == 2
    for rec in recording_server.requests:
        assert "authorization" not in rec.headers
        assert ENV_TOKEN not in str(rec.headers)
        assert ENV_TOKEN.encode() not in rec.raw


@server
def test_explicit_token_is_sent_as_bearer(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    make(recording_server, token=EXPLICIT)(MSGS)
    assert recording_server.last.headers["authorization"] == f"Bearer {EXPLICIT}"
    assert ENV_TOKEN not in str(header_values(recording_server))


@server
def test_authorization_header_from_client_kwargs_is_kept(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    make(recording_server, client_kwargs={"headers": {"Authorization": "Basic dXNlcjpwdw==", "X-Team": "a"}})(
        MSGS
    )
    assert recording_server.last.headers["authorization"] == "Basic dXNlcjpwdw=="
    assert recording_server.last.headers["x-team"] == "a"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, True),
        ("https://huggingface.co", True),
        ("https://router.huggingface.co/v1", True),
        ("https://abc123.us-east-1.aws.endpoints.huggingface.cloud", True),
        ("https://user-space.hf.space", True),
        ("https://HF.CO/", True),
        ("http://huggingface.co", False),  # the token never travels in clear
        ("https://evilhuggingface.co", False),
        ("https://huggingface.co.evil.example", False),
        ("https://huggingface.co@evil.example", False),
        ("http://127.0.0.1:8080", False),
        ("https://api.together.xyz", False),
    ],
)
def test_is_hf_host(url: str | None, expected: bool) -> None:
    assert is_hf_host(url) is expected


@server
def test_hf_endpoint_origin_gets_the_env_token_as_huggingface_hub_sends_it(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HF_ENDPOINT names a private Hub that huggingface_hub trusts with HF_TOKEN; its origin (scheme, host,
    port) gets the token here too, and nothing else does."""
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", recording_server.url)
    assert is_hf_host(f"{recording_server.url}/v1") and is_hf_host(
        recording_server.url.replace("127.0.0.1", "127.0.0.1.")
    )
    assert not is_hf_host(f"http://127.0.0.1:{recording_server.port + 1}")
    assert not is_hf_host(recording_server.url.replace("http://", "https://"))
    make(recording_server)(MSGS)
    assert recording_server.last.headers["authorization"] == f"Bearer {ENV_TOKEN}"
    monkeypatch.delenv("HF_ENDPOINT")
    make(recording_server)(MSGS)
    assert "authorization" not in recording_server.last.headers


def test_env_token_is_used_for_hf_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    hf = HfApiModel(base_url="https://abc.endpoints.huggingface.cloud")
    assert hf.client.token == ENV_TOKEN
    router = HfApiModel(provider="together")
    assert router.client.token == ENV_TOKEN
    other = HfApiModel(base_url="https://api.example.com")
    assert other.client.token != ENV_TOKEN
    assert other.client.headers["authorization"] is None  # dropped by the SDK: no header at all


def test_hf_router_without_any_token_fails_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)  # also ignore a saved login
    with pytest.raises(BackendError, match="HF_TOKEN") as info:
        HfApiModel()(MSGS)
    assert info.value.status is None


# --------------------------------------------------------------------------- grammar, formats, tools


@server
@pytest.mark.parametrize(
    ("grammar", "sent"),
    [
        ({"type": "regex", "value": "[a-z]+"}, {"type": "regex", "value": "[a-z]+"}),
        ("(yes|no)", {"type": "regex", "value": "(yes|no)"}),
        (
            {"type": "json", "value": {"type": "object", "properties": {"a": {"type": "integer"}}}},
            {"type": "json", "value": {"type": "object", "properties": {"a": {"type": "integer"}}}},
        ),
    ],
)
def test_grammar_is_sent_as_response_format(
    recording_server: RecordingServer, grammar: Any, sent: Any
) -> None:
    make(recording_server)(MSGS, grammar=grammar)
    assert recording_server.last.body["response_format"] == sent


@server
def test_response_format_is_forwarded(recording_server: RecordingServer) -> None:
    make(recording_server)(MSGS, response_format={"type": "json_object"})
    assert recording_server.last.body["response_format"] == {"type": "json_object"}


@server
def test_grammar_and_response_format_together_are_refused(recording_server: RecordingServer) -> None:
    with pytest.raises(MessageError, match="not both"):
        make(recording_server)(MSGS, grammar="x+", response_format={"type": "json_object"})
    with pytest.raises(MessageError, match="grammar must be"):
        make(recording_server)(MSGS, grammar={"no": "type"})
    assert recording_server.requests == []


def tool_call_reply() -> dict[str, Any]:
    """A TGI-style chat completion with one tool call (test_fakes_match_providers checks its shape)."""
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "org/test-model",
        "system_fingerprint": "",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }


@server
def test_tools_are_forwarded_and_tool_calls_parsed(recording_server: RecordingServer) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "w",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    recording_server.enqueue(200, tool_call_reply())
    reply = make(recording_server)(MSGS, tools_to_call_from=[tool])
    assert recording_server.last.body["tools"] == [tool]
    assert reply.tool_calls is not None
    assert reply.tool_calls[0].function.name == "get_weather"
    assert reply.tool_calls[0].function.arguments == {"city": "Paris"}


# --------------------------------------------------------------------------- streaming


@server
def test_stream(recording_server: RecordingServer) -> None:
    deltas = list(make(recording_server, max_tokens=20).generate_stream(MSGS))
    body = recording_server.last.body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "org/test-model"
    assert body["max_tokens"] == 20
    assert "".join(d.content or "" for d in deltas) == "Hello from the recording server"
    assert deltas[-1].token_usage == TokenUsage(5, 7)


@server
def test_stream_honours_stop_sequences(recording_server: RecordingServer) -> None:
    deltas = list(make(recording_server).generate_stream(MSGS, stop_sequences=["record"]))
    assert recording_server.last.body["stop"] == ["record"]
    assert "".join(d.content or "" for d in deltas) == "Hello from the "


# --------------------------------------------------------------------------- errors


@server
def test_server_error_is_a_retryable_backend_error(recording_server: RecordingServer) -> None:
    recording_server.enqueue(500, {"error": {"message": "the GPU caught fire", "type": "server_error"}})
    with pytest.raises(BackendError) as info:
        make(recording_server)(MSGS)
    err = info.value
    assert err.status == 500
    assert err.retryable is True
    assert err.backend == "HfApiModel"
    assert err.model_id == "org/test-model"
    assert "the GPU caught fire" in str(err)


@server
def test_unauthorized_names_the_status_and_scrubs_the_token(recording_server: RecordingServer) -> None:
    recording_server.enqueue(
        401, {"error": {"message": f"token {EXPLICIT} is not valid", "type": "invalid_request_error"}}
    )
    with pytest.raises(BackendError) as info:
        make(recording_server, token=EXPLICIT)(MSGS)
    assert info.value.status == 401
    assert info.value.retryable is False
    assert EXPLICIT not in str(info.value)
    assert "is not valid" in str(info.value)


@server
def test_unauthorized_without_token_explains_the_token_policy(recording_server: RecordingServer) -> None:
    recording_server.enqueue(401, {"error": "missing key", "error_type": "authentication"})
    with pytest.raises(BackendError, match="only sent to Hugging Face hosts") as info:
        make(recording_server)(MSGS)
    assert info.value.status == 401


@server
def test_stream_error_status(recording_server: RecordingServer) -> None:
    recording_server.enqueue(503, {"error": "overloaded", "error_type": "overloaded"})
    with pytest.raises(BackendError) as info:
        list(make(recording_server).generate_stream(MSGS))
    assert info.value.status == 503
    assert info.value.retryable is True


@server
def test_timeout_is_a_retryable_backend_error(recording_server: RecordingServer) -> None:
    recording_server.enqueue(200, delay=1.5)
    with pytest.raises(BackendError, match="timed out") as info:
        make(recording_server, timeout=0.3)(MSGS)
    assert info.value.retryable is True


def test_connection_refused_is_a_backend_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendError, match="cannot connect") as info:
        HfApiModel(base_url=f"http://127.0.0.1:{port}", retry={"max_attempts": 1})(MSGS)
    assert info.value.retryable is True
    assert info.value.status is None


def test_offline_mode_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BackendError, match="HF_HUB_OFFLINE"):
        HfApiModel(base_url="http://127.0.0.1:9")(MSGS)


# --------------------------------------------------------------------------- config


def test_unknown_kwarg_is_a_config_error_with_did_you_mean() -> None:
    with pytest.raises(ConfigError) as info:
        HfApiModel(modle_id="x", tokn="y")
    text = str(info.value)
    assert "did you mean 'model_id'?" in text
    assert "did you mean 'token'?" in text
    assert len(info.value.problems) == 2


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"base_url": "ftp://example.com"}, "base_url"),
        ({"base_url": "127.0.0.1:8080"}, "base_url"),
        ({"base_url": "http://127.0.0.1:1", "provider": "together"}, "provider"),
        ({"model_id": "https://my-endpoint.example/v1"}, "model_id"),
        ({"base_url": "http://127.0.0.1:1", "bill_to": "my-org"}, "bill_to"),
        ({"client_kwargs": {"api_key": "x"}}, "client_kwargs.api_key"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_invalid_configs(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        HfApiModel(**kwargs)
    assert key in {p.key for p in info.value.problems}


def test_defaults_and_lazy_client() -> None:
    model = HfApiModel()
    assert model.model_id == "meta-llama/Llama-3.3-70B-Instruct"
    assert "client" not in model.__dict__
    assert InferenceClientModel is HfApiModel
    assert modelfactory.HfApiModel is HfApiModel
    assert modelfactory.InferenceClientModel is HfApiModel


def test_to_dict_redacts_the_token() -> None:
    data = HfApiModel(token=EXPLICIT, base_url="http://127.0.0.1:1").to_dict()
    assert data["_target_"] == "modelfactory.backends.hf_inference.HfApiModel"
    assert EXPLICIT not in str(data)
    assert data["base_url"] == "http://127.0.0.1:1"


def test_missing_huggingface_hub_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingDependencyError, match=r"modelfactory\[hf\]"):
        HfApiModel(base_url="http://127.0.0.1:1")(MSGS)


@server
def test_hf_api_config_file(recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    cfg = OmegaConf.load(REPO / "modelfactory" / "conf" / "model" / "hf_api.yaml")
    assert ENV_TOKEN not in OmegaConf.to_yaml(cfg)
    assert cfg.model_id == "meta-llama/Llama-3.3-70B-Instruct"
    assert modelfactory.validate_config(cfg) == []
    model = modelfactory.build_model(cfg)
    assert isinstance(model, HfApiModel)
    assert model.client.token == ENV_TOKEN  # HF router: the env token is used
    local = modelfactory.build_model(cfg, base_url=recording_server.url)
    local(MSGS)
    assert recording_server.last.body["model"] == "meta-llama/Llama-3.3-70B-Instruct"
    assert "authorization" not in recording_server.last.headers


@server
def test_every_request_closes_its_response(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """InferenceClient keeps each response in its ExitStack until closed; the adapter closes them per call,
    including a stream abandoned half-way (its HTTP response would otherwise stay open)."""
    model = make(recording_server)
    made: list[Any] = []
    original = model._call_client

    def tracking() -> Any:
        made.append(original())
        return made[-1]

    monkeypatch.setattr(model, "_call_client", tracking)
    model(MSGS)
    stream = model.generate_stream(MSGS)
    assert next(stream).content
    stream.close()
    assert len(made) == 2
    for client in made:
        assert not client.exit_stack._exit_callbacks  # private, but exactly what leaked


@server
@pytest.mark.parametrize(
    ("error_type", "exception", "retryable"),
    [
        ("validation", "ValidationError", False),  # the request is wrong: the same one fails again
        ("generation", "GenerationError", False),
        ("incomplete_generation", "IncompleteGenerationError", False),
        ("overloaded", "OverloadedError", True),  # TGI's queue is full: a later try can succeed
        ("something_new", "UnknownError", False),
    ],
)
def test_error_event_inside_a_stream(
    recording_server: RecordingServer, error_type: str, exception: str, retryable: bool
) -> None:
    recording_server.enqueue(
        200,
        f'data: {{"error": "Input validation error: too long", "error_type": "{error_type}"}}\n\n',
        headers={"content-type": "text/event-stream"},
    )
    with pytest.raises(BackendError, match="too long") as info:
        list(make(recording_server).generate_stream(MSGS))
    assert info.value.status is None
    assert info.value.retryable is retryable
    assert f"{exception}: " in str(info.value)  # huggingface_hub's class for that error_type


def test_structured_output_on_a_provider_without_it_is_refused_up_front() -> None:
    """As smolagents does, before any request (issue 23, item 6); with base_url the server decides."""
    from modelfactory.errors import UnsupportedFeatureError

    model = HfApiModel(model_id="org/m", token=EXPLICIT, provider="together", retry={"max_attempts": 1})
    with pytest.raises(UnsupportedFeatureError, match="only supports structured outputs") as info:
        model.generate(MSGS, response_format={"type": "json_object"})
    assert isinstance(info.value, ValueError) and "model.provider is 'together'" in str(info.value)
    with pytest.raises(UnsupportedFeatureError, match="structured outputs"):
        list(
            HfApiModel(model_id="org/m", token=EXPLICIT).generate_stream(
                MSGS, response_format={"type": "json_object"}
            )
        )
