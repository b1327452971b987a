"""Every API backend end to end through the real LiteLLM proxy on 127.0.0.1 (mock models, no provider)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from modelfactory.backends.azure import AzureOpenAIServerModel
from modelfactory.backends.hf_inference import HfApiModel
from modelfactory.backends.litellm import LiteLLMModel
from modelfactory.backends.openai import OpenAIServerModel
from modelfactory.errors import BackendError
from modelfactory.model import Model
from tests.servers.litellm_proxy import (
    AZURE_API_VERSION,
    AZURE_DEPLOYMENT,
    MOCK_REPLY,
    OPENAI_MODEL,
    LiteLLMProxy,
)

pytestmark = [
    pytest.mark.server,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Item 'summary' on TypedDict:UserWarning"),  # from litellm's types
]
MSGS = [{"role": "user", "content": "Say hello"}]
Builder = Callable[[LiteLLMProxy, pytest.MonkeyPatch], Model]


def openai_server(proxy: LiteLLMProxy, mp: pytest.MonkeyPatch) -> Model:
    return OpenAIServerModel(
        model_id=OPENAI_MODEL, api_base=proxy.base_url, api_key=proxy.master_key, max_retries=0
    )


def azure_from_env(proxy: LiteLLMProxy, mp: pytest.MonkeyPatch) -> Model:
    mp.setenv("AZURE_OPENAI_ENDPOINT", proxy.url)
    mp.setenv("AZURE_OPENAI_API_KEY", proxy.master_key)
    mp.setenv("OPENAI_API_VERSION", AZURE_API_VERSION)
    mp.setenv("AZURE_OPENAI_MODEL", AZURE_DEPLOYMENT)
    return AzureOpenAIServerModel(max_retries=0)  # nothing but the env vars


def litellm_openai(proxy: LiteLLMProxy, mp: pytest.MonkeyPatch) -> Model:
    return LiteLLMModel(model_id=f"openai/{OPENAI_MODEL}", api_base=proxy.base_url, api_key=proxy.master_key)


def litellm_azure(proxy: LiteLLMProxy, mp: pytest.MonkeyPatch) -> Model:
    mp.setenv("OPENAI_API_VERSION", AZURE_API_VERSION)
    return LiteLLMModel(model_id=f"azure/{AZURE_DEPLOYMENT}", api_base=proxy.url, api_key=proxy.master_key)


def hf_api(proxy: LiteLLMProxy, mp: pytest.MonkeyPatch) -> Model:
    import huggingface_hub.constants

    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the suite sets HF_HUB_OFFLINE=1
    mp.setenv("HF_TOKEN", "hf_must-not-reach-the-proxy-000000")
    return HfApiModel(model_id=OPENAI_MODEL, base_url=proxy.url, token=proxy.master_key)


BUILDERS: dict[str, Builder] = {
    "openai": openai_server,
    "azure-env-only": azure_from_env,
    "litellm-openai": litellm_openai,
    "litellm-azure": litellm_azure,
    "hf-api": hf_api,
}


@pytest.fixture(params=sorted(BUILDERS))
def model(
    request: pytest.FixtureRequest, litellm_proxy: LiteLLMProxy, monkeypatch: pytest.MonkeyPatch
) -> Model:
    return BUILDERS[request.param](litellm_proxy, monkeypatch)


def test_call_returns_the_mock_reply(model: Model) -> None:
    reply = model(MSGS, max_tokens=16, temperature=0.0)
    assert reply.content == MOCK_REPLY
    assert reply.token_usage is not None
    assert reply.token_usage.total_tokens > 0


def test_stream_returns_the_mock_reply(model: Model) -> None:
    deltas = list(model.generate_stream(MSGS))
    assert "".join(d.content or "" for d in deltas) == MOCK_REPLY
    assert len([d for d in deltas if d.content]) > 1  # really streamed, in pieces
    assert deltas[-1].token_usage is not None


def test_stop_sequences_hold_through_the_proxy(model: Model) -> None:
    # The mock ignores `stop`; the adapter still never returns the stop or what follows it.
    assert model(MSGS, stop_sequences=["LiteLLM"]).content == "Hello from the "
    streamed = "".join(d.content or "" for d in model.generate_stream(MSGS, stop_sequences=["LiteLLM"]))
    assert streamed == "Hello from the "


@pytest.mark.parametrize(
    "make",
    [
        lambda p: OpenAIServerModel(
            model_id=OPENAI_MODEL, api_base=p.base_url, api_key="sk-wrong", max_retries=0
        ),
        lambda p: LiteLLMModel(model_id=f"openai/{OPENAI_MODEL}", api_base=p.base_url, api_key="sk-wrong"),
        lambda p: HfApiModel(model_id=OPENAI_MODEL, base_url=p.url, token="sk-wrong"),
    ],
    ids=["openai", "litellm", "hf-api"],
)
def test_wrong_key_is_a_backend_error_with_status(
    make: Callable[[LiteLLMProxy], Model], litellm_proxy: LiteLLMProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(BackendError) as info:
        make(litellm_proxy)(MSGS)
    # The proxy without a database answers a wrong key with 400 "No connected db." (401 with one).
    assert info.value.status in (400, 401)
    assert "sk-wrong" not in str(info.value)
