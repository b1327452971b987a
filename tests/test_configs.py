"""Each of the eight shipped configs, composed by Hydra and built by ``hydra.utils.instantiate``,
completes a real call (API ones pointed at a real local server through overrides or env vars)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException

from modelfactory import BackendError, Model
from tests.servers.recording import RecordingServer

CONF = Path(__file__).resolve().parents[1] / "modelfactory" / "conf"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def instantiate(name: str, *overrides: str) -> Any:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="config", overrides=[f"model={name}", *overrides])
    return hydra.utils.instantiate(cfg.model)


@pytest.fixture
def server() -> Any:
    with RecordingServer(reply="Paris.\n\nAnd more") as s:
        yield s


def test_every_design_config_is_shipped() -> None:
    assert {p.stem for p in (CONF / "model").glob("*.yaml")} - {"fallback_example"} == {
        "transformers_tiny",
        "transformers_smollm",
        "transformers_smollm2",
        "hf_api",
        "litellm_claude",
        "openai_gpt4o",
        "azure_openai",
        "custom_callable",
        "local_server",
        "gpu_server",  # the per-job vLLM / llama.cpp server of the SLURM GPU recipes
        "llamacpp_smollm2",
        "openvino_smollm2",
        "openai_responses",  # OpenAI's Responses API (issue 26)
        "bedrock_nova",
        "litellm_router",
        "vllm_qwen",  # Linux + CUDA GPU only
        "mlx_smollm2",  # macOS on Apple silicon only
    }


# How to point each API config at the local server: overrides, and env vars (keys are placeholders).
_TO_SERVER: dict[str, tuple[list[str], dict[str, str]]] = {
    "openai_gpt4o": (["model.api_base={url}/v1"], {"OPENAI_API_KEY": "sk-test"}),
    # o4-mini takes no temperature (modelfactory.capabilities): a model that does, to see it sent
    "openai_responses": (
        ["model.api_base={url}/v1", "model.model_id=gpt-4.1"],
        {"OPENAI_API_KEY": "sk-test"},
    ),
    "local_server": (["model.api_base={url}/v1"], {}),
    "hf_api": (["model.base_url={url}"], {}),
    "litellm_claude": (["model.api_base={url}"], {"ANTHROPIC_API_KEY": "sk-ant-test"}),
    "fallback_example": (["model.models.0.api_base={url}/v1"], {}),
    "azure_openai": (
        [],
        {
            "AZURE_OPENAI_ENDPOINT": "{url}",
            "AZURE_OPENAI_API_KEY": "az-test",
            "OPENAI_API_VERSION": "2024-10-21",
            "AZURE_OPENAI_MODEL": "deploy",
        },
    ),
}


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_temperature_override_reaches_the_model_on_every_config(
    name: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The override changes what the built model does, not just what Hydra echoes back."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read once at import
    overrides, env = _TO_SERVER.get(name, ([], {}))
    for var, value in env.items():
        monkeypatch.setenv(var, value.format(url=server.url))
    if name == "mlx_smollm2" and sys.platform != "darwin":  # MLX builds on Apple silicon only
        with pytest.raises(InstantiationException, match="UnsupportedFeatureError.*macOS on Apple silicon"):
            instantiate(name, "model.temperature=0.2")
        return
    model = instantiate(name, "model.temperature=0.2", *(o.format(url=server.url) for o in overrides))
    assert model.spec.temperature == 0.2 and model.to_dict()["temperature"] == 0.2
    if name in _TO_SERVER:  # an API model: the request that went out carries it
        model(MESSAGES)
        assert server.last.body["temperature"] == 0.2
    else:
        default = instantiate(name)
        assert default.spec.temperature != 0.2  # the override changed something


def test_transformers_tiny(server: RecordingServer) -> None:
    model = instantiate("transformers_tiny", "model.temperature=0")
    reply = model(MESSAGES, stop_sequences=["Paris"])
    assert reply.content == "The capital of France is "
    assert reply.token_usage.output_tokens > 0


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a machine's first load dequantizes the GGUF
def test_transformers_smollm2_the_offline_default() -> None:
    pytest.importorskip("torch")
    model = instantiate("transformers_smollm2")
    question = [{"role": "user", "content": "Name the capital city of France."}]
    reply = model(question, stop_sequences=["Paris"])
    assert reply.content == "The capital city of France is "
    assert reply.raw["stop_sequence"] == "Paris"


def test_transformers_smollm_fails_clearly_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    model = instantiate("transformers_smollm", f"+model.model_kwargs={{cache_dir: {tmp_path}}}")
    assert isinstance(model, Model)  # built without touching weights
    with pytest.raises(BackendError) as err:
        model(MESSAGES)
    assert "HuggingFaceTB/SmolLM-135M-Instruct" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)


@pytest.mark.slow
def test_llamacpp_smollm2() -> None:
    model = instantiate("llamacpp_smollm2")
    reply = model([{"role": "user", "content": "Name the capital city of France."}], stop_sequences=["Paris"])
    assert reply.content == "The capital city of France is "
    assert reply.token_usage.output_tokens > 0


def test_openai_gpt4o(server: RecordingServer) -> None:
    reply = instantiate("openai_gpt4o", f"model.api_base={server.url}/v1")(MESSAGES, stop_sequences=["\n\n"])
    assert reply.content == "Paris."
    assert server.last.body["model"] == "gpt-4o"


def test_local_server(server: RecordingServer) -> None:
    reply = instantiate("local_server", f"model.api_base={server.url}/v1")(MESSAGES)
    assert reply.content == "Paris.\n\nAnd more"
    assert server.last.path == "/v1/chat/completions"


def test_azure_openai_from_env_only(server: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-test-key")
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    monkeypatch.setenv("AZURE_OPENAI_MODEL", "gpt4o-deploy")
    reply = instantiate("azure_openai")(MESSAGES, stop_sequences=["\n\n"])
    assert reply.content == "Paris."
    assert server.last.path == "/openai/deployments/gpt4o-deploy/chat/completions"
    assert server.last.query["api-version"] == "2024-10-21"


def test_hf_api(server: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read once at import
    reply = instantiate("hf_api", f"model.base_url={server.url}")(MESSAGES, stop_sequences=["\n\n"])
    assert reply.content == "Paris."
    assert server.last.body["model"] == "meta-llama/Llama-3.3-70B-Instruct"


def test_litellm_claude(server: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    reply = instantiate("litellm_claude", f"model.api_base={server.url}")(MESSAGES, stop_sequences=["\n\n"])
    assert reply.content == "Paris."
    rec = server.last
    assert rec.path == "/v1/messages"  # Anthropic's own API, spoken by litellm
    assert rec.headers["x-api-key"] == "sk-ant-test-key"
    assert rec.body["max_tokens"] == 10 and rec.body["temperature"] == 0.2


def test_custom_callable() -> None:
    reply = instantiate("custom_callable")(MESSAGES, stop_sequences=["\n"])
    assert reply.content == "Echo: What is the capital of France?"
