"""LiteLLMModel on the wire (litellm.completion), against the real recording server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import textwrap
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

import modelfactory
from modelfactory.backends.litellm import LiteLLMModel
from modelfactory.errors import BackendError, ConfigError, MessageError
from modelfactory.messages import TokenUsage
from tests.procs import run_script
from tests.servers.recording import RecordingServer

KEY = "sk-configured-KEY-0123456789abcd"
ENV_KEY = "sk-env-KEY-9876543210fedcba"
MSGS = [{"role": "user", "content": "Say hello"}]
REPO = Path(__file__).resolve().parents[2]
server = pytest.mark.server
# litellm's own types trigger this pydantic warning when its streaming code is first imported.
pytestmark = pytest.mark.filterwarnings("ignore:Item 'summary' on TypedDict:UserWarning")


def make(srv: RecordingServer, **kwargs: Any) -> LiteLLMModel:
    kwargs.setdefault("model_id", "openai/test-model")
    kwargs.setdefault("api_key", KEY)
    if "num_retries" not in kwargs:  # one request per call: retries are tested in test_faults
        kwargs.setdefault("retry", {"max_attempts": 1})
    return LiteLLMModel(api_base=f"{srv.url}/v1", **kwargs)


def header_values(srv: RecordingServer) -> list[str]:
    return [v for rec in srv.requests for v in rec.headers.values()]


def anthropic_reply(text: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-sonnet-latest",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }


# --------------------------------------------------------------------------- OpenAI-compatible provider


@server
def test_request_shape(recording_server: RecordingServer) -> None:
    model = make(recording_server, temperature=0.3, max_tokens=12, top_p=0.5, seed=4)
    reply = model(MSGS, stop_sequences=["END"])
    rec = recording_server.last
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {KEY}"
    body = rec.body
    assert body["model"] == "test-model"  # litellm strips the provider prefix
    assert body["messages"] == MSGS
    assert body["stop"] == ["END"]
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 12
    assert body["top_p"] == 0.5
    assert body["seed"] == 4
    assert reply.content == "Hello from the recording server"
    assert reply.token_usage == TokenUsage(5, 7)


@server
def test_per_call_kwargs_and_extra_kwargs(recording_server: RecordingServer) -> None:
    model = make(
        recording_server,
        temperature=0.3,
        completion_kwargs={"extra_headers": {"X-Team": "team-a"}},
        generation_kwargs={"frequency_penalty": 0.5},
    )
    model(MSGS, temperature=1.1)
    body = recording_server.last.body
    assert body["temperature"] == 1.1
    assert recording_server.last.headers["x-team"] == "team-a"
    assert body["frequency_penalty"] == 0.5


@server
def test_stop_is_trimmed_even_past_litellms_four_stop_limit(recording_server: RecordingServer) -> None:
    stops = ["a1", "b2", "c3", "d4", "record"]
    reply = make(recording_server)(MSGS, stop_sequences=stops)
    assert recording_server.last.body["stop"] == stops[:4]  # litellm keeps only the first four
    assert reply.content == "Hello from the "


@server
def test_env_key_is_not_sent_to_a_custom_api_base(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    LiteLLMModel(model_id="openai/test-model", api_base=f"{recording_server.url}/v1")(MSGS)
    headers = recording_server.last.headers
    assert ENV_KEY not in str(headers)
    assert headers["authorization"] == "Bearer EMPTY"


@server
def test_env_base_url_and_env_key_go_together(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """litellm takes the base URL from OPENAI_BASE_URL when api_base is unset: set with OPENAI_API_KEY, the
    two are the user's own pairing (as the openai SDK treats them), so the env key goes there."""
    monkeypatch.setenv("OPENAI_BASE_URL", f"{recording_server.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    LiteLLMModel(model_id="openai/test-model")(MSGS)
    assert recording_server.last.headers["authorization"] == f"Bearer {ENV_KEY}"
    LiteLLMModel(model_id="openai/test-model", api_key=KEY)(MSGS)
    assert recording_server.last.headers["authorization"] == f"Bearer {KEY}"
    monkeypatch.delenv("OPENAI_API_KEY")  # a keyless local server named by the environment
    LiteLLMModel(model_id="openai/test-model")(MSGS)
    assert recording_server.last.headers["authorization"] == "Bearer EMPTY"


@server
def test_anthropic_env_key_follows_anthropic_base_url_from_the_env(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", recording_server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ENV_KEY)
    recording_server.enqueue(200, anthropic_reply("hi"))
    assert LiteLLMModel(model_id="anthropic/claude-3-5-sonnet-latest", max_tokens=5)(MSGS).content == "hi"
    assert recording_server.last.path == "/v1/messages"
    assert recording_server.last.headers["x-api-key"] == ENV_KEY
    with RecordingServer() as other:  # but not to an api_base a config names
        other.enqueue(200, anthropic_reply("hi"))
        LiteLLMModel(model_id="anthropic/claude-3-5-sonnet-latest", api_base=other.url, max_tokens=5)(MSGS)
        assert other.last.headers["x-api-key"] == "EMPTY"


@server
def test_response_format_and_tools_are_forwarded(recording_server: RecordingServer) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    make(recording_server)(MSGS, response_format={"type": "json_object"}, tools_to_call_from=[tool])
    body = recording_server.last.body
    assert body["response_format"] == {"type": "json_object"}
    assert body["tools"] == [tool]


def test_grammar_is_unsupported() -> None:
    with pytest.raises(modelfactory.UnsupportedFeatureError):
        LiteLLMModel(model_id="openai/x", api_base="http://127.0.0.1:1/v1")(MSGS, grammar="x+")


@server
def test_stream(recording_server: RecordingServer) -> None:
    deltas = list(make(recording_server, max_tokens=20).generate_stream(MSGS, stop_sequences=["server"]))
    body = recording_server.last.body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["stop"] == ["server"]
    assert "".join(d.content or "" for d in deltas) == "Hello from the recording "
    assert deltas[-1].token_usage == TokenUsage(5, 7)


# --------------------------------------------------------------------------- Azure


@server
def test_azure_route_with_env_api_version(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-06-01")
    model = LiteLLMModel(model_id="azure/my-deployment", api_base=recording_server.url, api_key=KEY)
    assert model(MSGS).content == "Hello from the recording server"
    rec = recording_server.last
    assert rec.path == "/openai/deployments/my-deployment/chat/completions"
    assert rec.query == {"api-version": "2024-06-01"}
    assert rec.headers["api-key"] == KEY
    assert "authorization" not in rec.headers


@server
def test_azure_explicit_api_version_wins(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-06-01")
    LiteLLMModel(model_id="azure/dep", api_base=recording_server.url, api_key=KEY, api_version="2024-10-21")(
        MSGS
    )
    assert recording_server.last.query == {"api-version": "2024-10-21"}


@server
def test_azure_from_env_only(recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", recording_server.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-06-01")
    LiteLLMModel(model_id="azure/dep")(MSGS)
    rec = recording_server.last
    assert rec.path == "/openai/deployments/dep/chat/completions"
    assert rec.query == {"api-version": "2024-06-01"}
    assert rec.headers["api-key"] == ENV_KEY  # an Azure endpoint is the user's own resource


# --------------------------------------------------------------------------- Anthropic (the litellm_claude config)


@server
def test_litellm_claude_config_takes_the_key_from_the_env(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ENV_KEY)
    cfg = OmegaConf.load(REPO / "modelfactory" / "conf" / "model" / "litellm_claude.yaml")
    assert ENV_KEY not in OmegaConf.to_yaml(cfg)  # stays an interpolation on disk
    model = modelfactory.build_model(cfg, api_base=recording_server.url)
    assert isinstance(model, LiteLLMModel)
    assert model.model_id == "anthropic/claude-sonnet-4-5"
    assert ENV_KEY not in str(model.to_dict())
    recording_server.enqueue(200, anthropic_reply("Hi from claude\n\nmore"))
    reply = model([{"role": "system", "content": "be brief"}, *MSGS], stop_sequences=["\n\n"])
    assert reply.content == "Hi from claude"
    assert reply.token_usage == TokenUsage(3, 4)
    rec = recording_server.last
    assert rec.path == "/v1/messages"
    assert rec.headers["x-api-key"] == ENV_KEY
    assert rec.body["temperature"] == 0.2
    assert rec.body["max_tokens"] == 10
    assert rec.body["stop_sequences"] == ["\n\n"]


def test_litellm_claude_config_without_key(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = OmegaConf.load(REPO / "modelfactory" / "conf" / "model" / "litellm_claude.yaml")
    assert modelfactory.validate_config(cfg) == []
    model = modelfactory.build_model(cfg)
    assert isinstance(model, LiteLLMModel)
    assert model.spec.api_key is None
    # No key anywhere: litellm fails before sending anything.
    with pytest.raises(BackendError, match="ANTHROPIC_API_KEY") as info:
        model(MSGS)
    assert info.value.status == 401


# --------------------------------------------------------------------------- errors and retries


@server
def test_server_error_is_a_retryable_backend_error(recording_server: RecordingServer) -> None:
    recording_server.enqueue(500, {"error": {"message": "the GPU caught fire", "type": "server_error"}})
    with pytest.raises(BackendError) as info:
        make(recording_server)(MSGS)
    err = info.value
    assert (err.status, err.retryable, err.backend) == (500, True, "LiteLLMModel")
    assert "the GPU caught fire" in str(err)
    assert not err.provider_message.startswith("litellm.")
    assert len(recording_server.requests) == 1  # litellm and openai retries are off


@server
def test_unauthorized_scrubs_the_key(recording_server: RecordingServer) -> None:
    recording_server.enqueue(
        401, {"error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_request_error"}}
    )
    with pytest.raises(BackendError) as info:
        make(recording_server)(MSGS)
    assert info.value.status == 401
    assert info.value.retryable is False
    assert KEY not in str(info.value)
    assert "Incorrect API key" in str(info.value)


@server
def test_env_secrets_are_scrubbed_too(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ENV_KEY)
    recording_server.enqueue(400, {"error": {"message": f"echo {ENV_KEY}", "type": "invalid_request_error"}})
    with pytest.raises(BackendError) as info:
        make(recording_server)(MSGS)
    assert info.value.status == 400
    assert ENV_KEY not in str(info.value)


@server
def test_unauthorized_without_key_explains_the_policy(recording_server: RecordingServer) -> None:
    recording_server.enqueue(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
    with pytest.raises(BackendError, match="no key is read from the environment"):
        LiteLLMModel(model_id="openai/x", api_base=f"{recording_server.url}/v1", retry={"max_attempts": 1})(
            MSGS
        )


@server
def test_stream_error_status(recording_server: RecordingServer) -> None:
    recording_server.enqueue(429, {"error": {"message": "slow down", "type": "requests"}})
    with pytest.raises(BackendError) as info:
        list(make(recording_server).generate_stream(MSGS))
    assert info.value.status == 429
    assert info.value.retryable is True


@server
def test_num_retries_retries_retryable_failures_without_stacking(recording_server: RecordingServer) -> None:
    recording_server.enqueue(503, {"error": {"message": "busy", "type": "server_error"}})
    fast = {"initial_wait": 0.01}
    reply = make(recording_server, num_retries=2, retry=fast)(MSGS)  # deprecated alias of retry.max_attempts
    assert reply.content == "Hello from the recording server"
    assert len(recording_server.requests) == 2
    recording_server.requests.clear()
    for _ in range(5):
        recording_server.enqueue(500, {"error": {"message": "down", "type": "server_error"}})
    with pytest.raises(BackendError):
        make(recording_server, num_retries=1, retry=fast)(MSGS)
    assert len(recording_server.requests) == 2  # 1 + num_retries, never litellm's or openai's on top


@server
def test_client_errors_are_not_retried(recording_server: RecordingServer) -> None:
    recording_server.enqueue(400, {"error": {"message": "bad request", "type": "invalid_request_error"}})
    with pytest.raises(BackendError):
        make(recording_server, num_retries=3)(MSGS)
    assert len(recording_server.requests) == 1


def test_connection_refused_has_no_made_up_status() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendError, match="cannot connect to http://127.0.0.1") as info:
        LiteLLMModel(
            model_id="openai/x",
            api_base=f"http://127.0.0.1:{port}/v1",
            api_key=KEY,
            retry={"max_attempts": 1},
        )(MSGS)
    assert info.value.status is None  # litellm itself reports a 500
    assert info.value.retryable is True


@server
def test_timeout(recording_server: RecordingServer) -> None:
    recording_server.enqueue(200, delay=2.0)
    with pytest.raises(BackendError, match="timed out") as info:
        make(recording_server, timeout=0.4)(MSGS)
    assert info.value.retryable is True


# --------------------------------------------------------------------------- config


def test_unknown_kwarg_is_a_config_error_with_did_you_mean() -> None:
    with pytest.raises(ConfigError) as info:
        LiteLLMModel(model_id="openai/x", api_bse="http://127.0.0.1:1")
    assert "did you mean 'api_base'?" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({}, "model_id"),
        ({"model_id": "x", "api_base": "localhost:4000"}, "api_base"),
        ({"model_id": "x", "completion_kwargs": {"api_key": "k"}}, "completion_kwargs.api_key"),
        ({"model_id": "x", "completion_kwargs": {"stream": True}}, "completion_kwargs.stream"),
        ({"model_id": "x", "generation_kwargs": {"num_retries": 3}}, "generation_kwargs.num_retries"),
        ({"model_id": "x", "num_retries": -1}, "num_retries"),
    ],
)
def test_invalid_configs(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        LiteLLMModel(**kwargs)
    assert key in {p.key for p in info.value.problems}


def test_reserved_per_call_kwarg_is_refused() -> None:
    with pytest.raises(MessageError, match="api_base"):
        LiteLLMModel(model_id="openai/x", api_base="http://127.0.0.1:1/v1")(MSGS, api_base="http://elsewhere")


def test_to_dict_redacts_the_key() -> None:
    data = LiteLLMModel(model_id="openai/x", api_key=KEY).to_dict()
    assert data["_target_"] == "modelfactory.backends.litellm.LiteLLMModel"
    assert KEY not in str(data)


@pytest.mark.slow
def test_litellm_is_imported_lazily_and_quietly() -> None:
    """Building never imports litellm; the first call imports it with the local cost map, kept quiet."""
    code = textwrap.dedent(
        """
        import os, sys
        import modelfactory
        model = modelfactory.LiteLLMModel(model_id="anthropic/claude-3-5-sonnet-latest")
        assert "litellm" not in sys.modules, "built eagerly"
        assert "LITELLM_LOCAL_MODEL_COST_MAP" not in os.environ
        litellm = model.litellm
        assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
        assert litellm.suppress_debug_info is True
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    out = run_script(code, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
