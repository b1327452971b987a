"""Models that reject `stop` / `temperature`: recognised from model_id by the capability map, the
parameters left off the wire (checked on a real server on 127.0.0.1), the stop contract kept client-side."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfactory import build_model
from modelfactory.capabilities import request_capabilities
from modelfactory.cli import main
from tests.servers.recording import RecordingServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("model_id", "stop", "temperature"),
    [
        ("gpt-5", False, False),
        ("gpt-5-mini-2025-08-07", False, False),
        ("gpt-5.1", False, False),
        ("openai/o3-mini", False, False),
        ("azure/o1", False, False),
        ("o4-mini", False, False),
        ("gpt-5-chat-latest", False, True),  # the exception goes before its family: sampling kept
        ("gpt-4o", True, True),
        ("gpt-50", False, True),  # the gpt-5 family is - or . (no sampling change); `stop` any gpt-5*
        ("o10-local", True, True),
        ("grok-4", False, True),
        ("oci/xai.grok-3-mini", False, True),  # OCI's vendor prefix
        ("groks-1", True, True),
    ],
)
def test_map(model_id: str, stop: bool, temperature: bool) -> None:
    caps = request_capabilities(model_id, provider_map=False)
    assert (caps.stop, caps.temperature) == (stop, temperature)


# Ids smolagents' own test of supports_stop_parameter uses (1.26), and some more of each family.
_STOP_IDS = [
    *[
        "o3",
        "o4-mini",
        "gpt-5.1",
        "gpt-5.2",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-5-turbo",
        "gpt-5.2-mini",
        "grok-4",
    ],
    *["grok-4-latest", "grok-4.1", "grok-3", "grok-3-mini", "grok-code-fast-1", "o4-mini-2025-04-16"],
    *["gpt-5-2025-01-01", "openai/o3", "openai/o4-mini", "openai/o3-2025-04-16", "openai/o4-mini-2025-04-16"],
    *["openai/gpt-5.2", "openai/gpt-5.2-mini", "openai/gpt-5.2-2025-01-01", "oci/xai.grok-4"],
    *["oci/xai.grok-3-mini", "o3-mini", "gpt-4", "claude-3-5-sonnet", "mistral-large", "openai/gpt-4"],
    *["anthropic/claude-3-5-sonnet", "anthropic/claude-opus-4-5", "mistralai/mistral-large", "o3x", "o4x"],
    *[
        "gpt-5x",
        "gpt-50",
        "o3_mini",
        "prefix-o3",
        "gpt-5-chat-latest",
        "xai/grok-2-1212",
        "grok-beta",
        "o3.5",
    ],
    *["azure/o4-mini", "GROK-4", "Gpt-5", "openrouter/x-ai/grok-code-fast-1", "gpt-4.1", "llama-3.3-70b"],
]
# Where we leave `stop` off and smolagents does not (both are safe: the reply is trimmed afterwards).
_STRICTER_THAN_SMOLAGENTS = {"o3-mini", "GROK-4", "Gpt-5"}  # o3-mini: OpenAI's reasoning guide; case


@pytest.mark.parametrize("model_id", _STOP_IDS)
def test_stop_covers_every_model_smolagents_excludes(model_id: str) -> None:
    smolagents_models = pytest.importorskip("smolagents.models")
    from modelfactory.capabilities import supports_stop_parameter

    theirs = smolagents_models.supports_stop_parameter(model_id)
    ours = supports_stop_parameter(model_id)
    if not theirs:
        assert ours is False, f"smolagents sends no `stop` to {model_id!r}; neither must we"
    else:
        assert ours is (model_id not in _STRICTER_THAN_SMOLAGENTS)


def test_config_overrides_the_map() -> None:
    caps = request_capabilities("o3", supports_stop=True, provider_map=False)
    assert caps.stop is True and caps.temperature is False and caps.source.startswith("config over")
    no_sampling = request_capabilities("gpt-4o", supports_temperature=False, provider_map=False)
    assert no_sampling.temperature is False and "top_p" in no_sampling.dropped  # the whole group
    assert request_capabilities("o3", supports_temperature=True, provider_map=False).dropped == ()


def test_litellm_map_sampling_params() -> None:
    pytest.importorskip("litellm")
    # LiteLLM's bundled map marks these Anthropic models supports_sampling_params: false
    caps = request_capabilities("claude-opus-4-7")
    assert caps.temperature is False and caps.stop is True and "LiteLLM" in caps.source
    assert {"top_p", "top_k"} <= set(caps.dropped)


@pytest.mark.server
@pytest.mark.parametrize("model_id", ["gpt-5", "o3"])
def test_reasoning_model_sends_no_stop_or_temperature(model_id: str) -> None:
    with RecordingServer(reply="Hello from the recording server") as server:
        model = build_model(
            {
                "_target_": "modelfactory.OpenAIServerModel",
                "model_id": model_id,
                "api_base": f"{server.url}/v1",
                "api_key": "sk-test",
                "temperature": 0.3,
            }
        )
        reply = model(
            [{"role": "user", "content": "hi"}],
            stop_sequences=["recording"],
            temperature=0.7,
            max_tokens=9,
            top_p=0.9,
            presence_penalty=0.5,
            frequency_penalty=0.5,
            logprobs=True,
            top_logprobs=2,
            seed=3,
        )
        body = server.last.body
    assert reply.content == "Hello from the "  # trimmed client-side
    rejected = {"stop", "temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs"}
    assert not (rejected | {"top_logprobs", "max_tokens"}) & set(body), body
    assert body["max_completion_tokens"] == 9 and body["seed"] == 3  # renamed; seed is no sampling knob
    assert body["model"] == model_id


@pytest.mark.parametrize(
    ("model_id", "dropped"),
    [
        ("o3", ("temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs")),
        (
            "gpt-5-mini",
            (
                "temperature",
                "top_p",
                "presence_penalty",
                "frequency_penalty",
                "logprobs",
                "top_logprobs",
                "logit_bias",
            ),
        ),
        ("gpt-5-chat-latest", ()),
        ("gpt-4o", ()),
    ],
)
def test_sampling_parameters_each_family_rejects(model_id: str, dropped: tuple[str, ...]) -> None:
    caps = request_capabilities(model_id)  # an API model's id
    assert caps.dropped == dropped
    assert caps.apply({"top_p": 0.5, "max_tokens": 3, "seed": 1}) == (
        {"top_p": 0.5, "max_tokens": 3, "seed": 1} if not dropped else {"max_completion_tokens": 3, "seed": 1}
    )


def test_a_local_model_keeps_max_tokens_whatever_its_id() -> None:
    # the family map names API models: a local checkpoint called "o3-tiny" still takes max_tokens
    assert request_capabilities("o3-tiny", provider_map=False).renamed == ()
    assert request_capabilities("o3-tiny").renamed == (("max_tokens", "max_completion_tokens"),)


@pytest.mark.server
def test_override_sends_them_again(recording_server: RecordingServer) -> None:
    model = build_model(
        {
            "_target_": "modelfactory.OpenAIServerModel",
            "model_id": "o3",
            "api_base": f"{recording_server.url}/v1",
            "api_key": "sk-test",
            "supports_stop": True,
            "supports_temperature": True,
        }
    )
    model([{"role": "user", "content": "hi"}], stop_sequences=["recording"], temperature=0.7, top_p=0.9)
    body = recording_server.last.body
    assert body["stop"] == ["recording"] and body["temperature"] == 0.7 and body["top_p"] == 0.9


def test_check_says_so(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    code = main(
        [
            "--config-dir",
            str(ROOT / "modelfactory" / "conf"),
            "check",
            "model=openai_gpt4o",
            "model.model_id=o3",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "note: conf/model/openai_gpt4o.yaml: model 'o3': `stop` is not sent" in out
    assert "sampling parameters are not sent (the model rejects them): `temperature`, `top_p`," in out
    assert "`max_tokens` is sent as `max_completion_tokens`" in out
    main(["--config-dir", str(ROOT / "modelfactory" / "conf"), "check", "model=openai_gpt4o"])
    assert "note:" not in capsys.readouterr().out  # gpt-4o takes both
