"""AzureOpenAIServerModel against the recording server: env-only config, Azure routes and auth header."""

from __future__ import annotations

import pytest

from modelfactory.backends.azure import AzureOpenAIServerModel
from modelfactory.errors import BackendError, ConfigError
from modelfactory.messages import TokenUsage
from tests.servers.recording import RecordingServer

AZ_KEY = "az-KEY-0000aaaa1111bbbb"
API_VERSION = "2024-10-21"
MSGS = [{"role": "user", "content": "hi"}]
ENV_VARS = ("AZURE_OPENAI_MODEL", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "OPENAI_API_VERSION")


@pytest.fixture
def azure_env(recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> RecordingServer:
    monkeypatch.setenv("AZURE_OPENAI_MODEL", "my-deployment")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", recording_server.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZ_KEY)
    monkeypatch.setenv("OPENAI_API_VERSION", API_VERSION)
    return recording_server


def test_env_vars_only_config_works(azure_env: RecordingServer) -> None:
    m = AzureOpenAIServerModel(max_retries=0)
    assert m.model_id == "my-deployment"
    out = m.generate(MSGS, stop_sequences=["server"], temperature=0.3)
    rec = azure_env.last
    assert rec.path == "/openai/deployments/my-deployment/chat/completions"
    assert rec.query == {"api-version": API_VERSION}
    assert rec.headers["api-key"] == AZ_KEY
    assert AZ_KEY not in rec.headers.get("authorization", "")
    assert "authorization" not in rec.headers
    assert rec.body["model"] == "my-deployment"
    assert rec.body["stop"] == ["server"]
    assert rec.body["temperature"] == 0.3
    assert out.content == "Hello from the recording "
    assert out.token_usage == TokenUsage(5, 7)


def test_stream_on_azure(azure_env: RecordingServer) -> None:
    azure_env.reply = "streamed from azure<stop>not this"
    deltas = list(AzureOpenAIServerModel(max_retries=0).generate_stream(MSGS, stop_sequences=["<stop>"]))
    assert azure_env.last.path == "/openai/deployments/my-deployment/chat/completions"
    assert azure_env.last.body["stream"] is True
    assert "".join(d.content or "" for d in deltas) == "streamed from azure"
    assert deltas[-1].token_usage == TokenUsage(5, 7)


def test_explicit_kwargs_override_env(azure_env: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "http://127.0.0.1:9")  # would fail if used
    m = AzureOpenAIServerModel(
        model_id="explicit-deployment",
        azure_endpoint=azure_env.url,
        api_key="explicit-az-key",
        api_version="2025-01-01-preview",
        max_retries=0,
    )
    m.generate(MSGS)
    rec = azure_env.last
    assert rec.path == "/openai/deployments/explicit-deployment/chat/completions"
    assert rec.query == {"api-version": "2025-01-01-preview"}
    assert rec.headers["api-key"] == "explicit-az-key"
    assert rec.body["model"] == "explicit-deployment"


def test_azure_deployment_differs_from_model_id(azure_env: RecordingServer) -> None:
    m = AzureOpenAIServerModel(model_id="gpt-4o", azure_deployment="prod-gpt4o", max_retries=0)
    m.generate(MSGS)
    assert azure_env.last.path == "/openai/deployments/prod-gpt4o/chat/completions"
    assert azure_env.last.body["model"] == "gpt-4o"


def test_null_kwargs_fall_back_to_env(azure_env: RecordingServer) -> None:
    m = AzureOpenAIServerModel(
        model_id=None, azure_endpoint=None, api_key=None, api_version=None, max_retries=0
    )
    m.generate(MSGS)
    assert azure_env.last.path == "/openai/deployments/my-deployment/chat/completions"
    assert azure_env.last.headers["api-key"] == AZ_KEY


def test_missing_env_is_one_error_naming_all_four_vars() -> None:
    with pytest.raises(ConfigError) as info:
        AzureOpenAIServerModel()
    err = info.value
    assert {p.key for p in err.problems} == {"model_id", "azure_endpoint", "api_key", "api_version"}
    text = str(err)
    assert text.startswith("invalid AzureOpenAIServerModel config: 4 problem(s)")
    for var in ENV_VARS:
        assert var in text


def test_partly_set_env_names_only_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_MODEL", "d")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZ_KEY)
    with pytest.raises(ConfigError) as info:
        AzureOpenAIServerModel()
    assert {p.key for p in info.value.problems} == {"azure_endpoint", "api_version"}
    assert AZ_KEY not in str(info.value)


@pytest.mark.parametrize("endpoint", ["my-resource.openai.azure.com", "ftp://x.example", ""])
def test_bad_endpoint_url(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        AzureOpenAIServerModel(model_id="d", azure_endpoint=endpoint, api_key=AZ_KEY, api_version=API_VERSION)
    (problem,) = info.value.problems
    assert problem.key == "azure_endpoint"
    assert "must be an http(s) URL" in problem.problem
    assert AZ_KEY not in str(info.value)


def test_bad_endpoint_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "not a url")
    with pytest.raises(ConfigError) as info:
        AzureOpenAIServerModel(model_id="d", api_key=AZ_KEY, api_version=API_VERSION)
    assert [p.key for p in info.value.problems] == ["azure_endpoint"]


def test_key_never_in_dict_or_errors(azure_env: RecordingServer) -> None:
    azure_env.enqueue(
        401,
        {
            "error": {
                "message": f"Access denied due to invalid subscription key {AZ_KEY}",
                "type": "invalid_request_error",
            }
        },
    )
    m = AzureOpenAIServerModel(max_retries=0)
    assert AZ_KEY not in repr(m.to_dict())
    assert m.to_dict()["api_version"] == API_VERSION
    with pytest.raises(BackendError) as info:
        m.generate(MSGS)
    assert info.value.status == 401
    assert AZ_KEY not in str(info.value)
    assert "check AZURE_OPENAI_API_KEY" in str(info.value)


def test_azure_client_is_lazy(azure_env: RecordingServer) -> None:
    m = AzureOpenAIServerModel()
    assert "client" not in m.__dict__
    assert azure_env.requests == []


AD_TOKEN = "eyJ-entra-TOKEN-0000cccc"


def test_entra_id_token_from_the_env_as_the_sdk_reads_it(
    azure_env: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AZURE_OPENAI_AD_TOKEN is a credential of its own, and the openai SDK prefers it over the env key."""
    monkeypatch.setenv("AZURE_OPENAI_AD_TOKEN", AD_TOKEN)
    AzureOpenAIServerModel(max_retries=0).generate(MSGS)  # both in the env: the token, as the SDK does
    assert azure_env.last.headers["authorization"] == f"Bearer {AD_TOKEN}"
    assert "api-key" not in azure_env.last.headers
    AzureOpenAIServerModel(api_key="explicit-az-key", max_retries=0).generate(MSGS)  # a named key wins
    assert azure_env.last.headers["api-key"] == "explicit-az-key"
    monkeypatch.delenv("AZURE_OPENAI_API_KEY")  # the token alone is enough
    model = AzureOpenAIServerModel(max_retries=0)
    model.generate(MSGS)
    assert azure_env.last.headers["authorization"] == f"Bearer {AD_TOKEN}"
    assert AD_TOKEN not in repr(model.to_dict())
    azure_env.enqueue(
        401, {"error": {"message": f"token {AD_TOKEN} expired", "type": "invalid_request_error"}}
    )
    with pytest.raises(BackendError) as info:
        model.generate(MSGS)
    assert AD_TOKEN not in str(info.value) and "check AZURE_OPENAI_AD_TOKEN" in str(info.value)


def test_token_provider_gives_a_fresh_token_per_request(
    azure_env: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_OPENAI_API_KEY")
    issued: list[str] = []

    def provider() -> str:
        issued.append(f"tok-{len(issued) + 1}")
        return issued[-1]

    m = AzureOpenAIServerModel(max_retries=0, client_kwargs={"azure_ad_token_provider": provider})
    m.generate(MSGS)
    m.generate(MSGS)
    assert [r.headers["authorization"] for r in azure_env.requests] == ["Bearer tok-1", "Bearer tok-2"]
    assert "api-key" not in azure_env.last.headers
