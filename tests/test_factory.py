"""build_model / validate_config on OmegaConf configs, and Hydra's own instantiate."""

from __future__ import annotations

import hydra.errors
import hydra.utils
import pytest
from omegaconf import OmegaConf

from modelfactory.backends.callable import CallableModel
from modelfactory.backends.openai import OpenAIServerModel
from modelfactory.errors import ConfigError
from modelfactory.factory import (
    BACKENDS,
    build_model,
    config_warnings,
    locate_target,
    model_node,
    validate_config,
)
from modelfactory.messages import TokenUsage
from tests.servers.recording import RecordingServer

KEY = "sk-factory-KEY-9999"
MSGS = [{"role": "user", "content": "hi"}]


def openai_node(url: str, **extra: object) -> dict[str, object]:
    return {
        "_target_": "modelfactory.backends.openai.OpenAIServerModel",
        "model_id": "served-model",
        "api_base": f"{url}/v1",
        "max_retries": 0,
        **extra,
    }


# --------------------------------------------------------------------------- building


def test_build_model_from_a_model_node(recording_server: RecordingServer) -> None:
    cfg = OmegaConf.create(
        openai_node(recording_server.url, temperature=0.4, client_kwargs={"default_headers": {"X-A": "1"}})
    )
    m = build_model(cfg)
    assert isinstance(m, OpenAIServerModel)
    assert m.spec.temperature == 0.4
    assert m.spec.client_kwargs == {"default_headers": {"X-A": "1"}}
    assert type(m.spec.client_kwargs["default_headers"]) is dict
    assert m.generate(MSGS).content == "Hello from the recording server"
    assert recording_server.last.body["temperature"] == 0.4
    assert recording_server.last.headers["x-a"] == "1"


def test_build_model_from_a_whole_app_config(recording_server: RecordingServer) -> None:
    cfg = OmegaConf.create(
        {"prompt": "hello", "generation": {"max_tokens": 5}, "model": openai_node(recording_server.url)}
    )
    assert model_node(cfg) is not cfg
    m = build_model(cfg)
    assert isinstance(m, OpenAIServerModel)
    assert m.model_id == "served-model"
    assert validate_config(cfg) == []


def test_short_target_names_and_overrides() -> None:
    cfg = OmegaConf.create({"_target_": "CallableModel", "fn": "examples.custom_model.custom_model"})
    m = build_model(cfg, model_id="overridden")
    assert isinstance(m, CallableModel)
    assert m.model_id == "overridden"
    assert m.generate(MSGS).content.startswith("Echo: hi")


def test_plain_dict_config() -> None:
    m = build_model({"_target_": "modelfactory.CallableModel", "fn": "examples.custom_model.custom_model"})
    assert isinstance(m, CallableModel)


def test_env_interpolation_is_resolved_at_build(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MF_TEST_SERVER_KEY", KEY)
    cfg = OmegaConf.create(openai_node(recording_server.url, api_key="${oc.env:MF_TEST_SERVER_KEY}"))
    m = build_model(cfg)
    m.generate(MSGS)
    assert recording_server.last.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(m.to_dict())


def test_every_backend_short_name_points_at_its_module() -> None:
    for short, path in BACKENDS.items():
        assert path.startswith("modelfactory.backends.")
        assert path.rpartition(".")[2] in (short, "HfApiModel")


# --------------------------------------------------------------------------- problems


@pytest.mark.parametrize(
    ("target", "suggestion"),
    [
        ("OpenAIServerModl", "OpenAIServerModel"),
        ("modelfactory.backends.openai.OpenAIServrModel", "OpenAIServerModel"),
        ("AzureOpenAIServerMdel", "AzureOpenAIServerModel"),  # AzureOpenAIModel is smolagents' name: valid
        ("CallabelModel", "CallableModel"),
    ],
)
def test_unknown_target_with_did_you_mean(target: str, suggestion: str) -> None:
    cfg = OmegaConf.create({"_target_": target, "model_id": "m"})
    problems = validate_config(cfg, source="conf/model/x.yaml")
    assert len(problems) == 1
    (p,) = problems
    assert p.key == "_target_"
    assert p.problem == f"cannot import {target!r}, did you mean '{suggestion}'?"
    assert "modelfactory.OpenAIServerModel" in p.fix
    assert p.source == "conf/model/x.yaml"
    with pytest.raises(ConfigError, match=f"did you mean '{suggestion}'"):
        build_model(cfg)


def test_unknown_target_without_a_close_match() -> None:
    (p,) = validate_config({"_target_": "zzz.Qqq"})
    assert p.problem == "cannot import 'zzz.Qqq'"


def test_missing_target() -> None:
    (p,) = validate_config(OmegaConf.create({"model_id": "m"}))
    assert p.key == "_target_"
    assert p.problem == "missing"
    assert "OpenAIServerModel" in p.fix


def test_missing_env_var_names_the_variable() -> None:
    cfg = OmegaConf.create(
        {"_target_": "OpenAIServerModel", "model_id": "gpt-4o", "api_key": "${oc.env:MF_TEST_UNSET_KEY_VAR}"}
    )
    problems = validate_config(cfg)
    env_problems = [p for p in problems if p.key == "api_key" and "MF_TEST_UNSET_KEY_VAR" in p.problem]
    assert len(env_problems) == 1
    assert env_problems[0].fix == "export MF_TEST_UNSET_KEY_VAR=... before running"
    with pytest.raises(ConfigError) as info:
        build_model(cfg)
    assert "MF_TEST_UNSET_KEY_VAR" in str(info.value)


def test_all_problems_at_once() -> None:
    cfg = OmegaConf.create(
        {
            "model": {
                "_target_": "OpenAIServerModel",
                "model_id": "m",
                "api_base": "http://127.0.0.1:9/v1",
                "api_key": "${oc.env:MF_TEST_UNSET_A}",
                "organization": "${oc.env:MF_TEST_UNSET_B}",
                "temprature": 0.1,
                "max_tokens": -4,
            }
        }
    )
    problems = validate_config(cfg)
    by_key = {p.key: p for p in problems}
    assert set(by_key) == {"api_key", "organization", "temprature", "max_tokens"}
    assert "MF_TEST_UNSET_A" in by_key["api_key"].problem
    assert "MF_TEST_UNSET_B" in by_key["organization"].problem
    assert "did you mean 'temperature'?" in by_key["temprature"].problem
    assert "greater than 0" in by_key["max_tokens"].problem


def test_build_model_reports_all_problems_at_once() -> None:
    cfg = OmegaConf.create(
        {
            "_target_": "OpenAIServerModel",
            "model_id": "m",
            "api_base": "http://127.0.0.1:9/v1",
            "api_key": "${oc.env:MF_TEST_UNSET_A}",
            "temprature": 0.1,
        }
    )
    with pytest.raises(ConfigError) as info:
        build_model(cfg)
    assert {p.key for p in info.value.problems} == {"api_key", "temprature"}


def test_a_failed_interpolation_is_reported_once() -> None:
    cfg = OmegaConf.create(
        {
            "_target_": "OpenAIServerModel",
            "model_id": "${oc.env:MF_TEST_UNSET_MODEL}",
            "api_base": "http://127.0.0.1:9/v1",
        }
    )
    problems = validate_config(cfg)
    assert [p.key for p in problems] == ["model_id"]
    assert "MF_TEST_UNSET_MODEL" in problems[0].problem


def test_validate_config_never_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    monkeypatch.setattr(OpenAIServerModel, "__init__", lambda self, **kw: built.append(kw))
    assert (
        validate_config(
            {"_target_": "OpenAIServerModel", "model_id": "m", "api_base": "http://127.0.0.1:9/v1"}
        )
        == []
    )
    assert built == []


def test_non_mapping_model_node() -> None:
    problems = validate_config(["not", "a", "mapping"])
    assert problems[0].key == "model"
    assert problems[0].problem == "expected a mapping with _target_, got list"
    with pytest.raises(ConfigError, match="expected a mapping"):
        build_model(["x"])


def test_non_mapping_omegaconf_model_node() -> None:
    problems = validate_config(OmegaConf.create({"model": ["not", "a", "mapping"]}))
    assert problems[0].key == "model"
    assert "expected a mapping with _target_" in problems[0].problem
    assert {p.key for p in problems} <= {"model", "_target_"}


def test_target_that_builds_no_model() -> None:
    with pytest.raises(ConfigError) as info:
        build_model({"_target_": "builtins.dict"})
    assert info.value.problems[0].key == "_target_"
    assert "did not build a callable model" in info.value.problems[0].problem


def test_locate_target() -> None:
    obj, problems = locate_target("OpenAIServerModel")
    assert obj is OpenAIServerModel and problems == []
    obj, problems = locate_target("modelfactory.OpenAIServerModel")
    assert obj is OpenAIServerModel and problems == []


# --------------------------------------------------------------------------- hydra


def test_hydra_instantiate_returns_a_ready_model(
    recording_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MF_TEST_SERVER_KEY", KEY)
    cfg = OmegaConf.create(
        {
            "model": openai_node(
                recording_server.url,
                api_key="${oc.env:MF_TEST_SERVER_KEY}",
                temperature=0.7,
                generation_kwargs={"top_k": 4},
                client_kwargs={"default_headers": {"X-From": "hydra"}},
            )
        }
    )
    m = hydra.utils.instantiate(cfg.model)
    assert isinstance(m, OpenAIServerModel)
    assert "client" not in m.__dict__
    assert m.spec.generation_kwargs == {"top_k": 4}
    out = m(MSGS, stop_sequences=["recording"])
    assert out.content == "Hello from the "
    assert out.token_usage == TokenUsage(5, 7)
    rec = recording_server.last
    assert rec.headers["authorization"] == f"Bearer {KEY}"
    assert rec.headers["x-from"] == "hydra"
    assert rec.body["temperature"] == 0.7
    assert rec.body["top_k"] == 4


def test_hydra_instantiate_with_a_short_public_path() -> None:
    cfg = OmegaConf.create(
        {"_target_": "modelfactory.CallableModel", "fn": "examples.custom_model.custom_model"}
    )
    m = hydra.utils.instantiate(cfg)
    assert isinstance(m, CallableModel)
    assert m.generate(MSGS, stop_sequences=["\n"]).content == "Echo: hi"


def test_hydra_instantiate_surfaces_the_config_error() -> None:
    cfg = OmegaConf.create(
        {"_target_": "modelfactory.backends.openai.OpenAIServerModel", "model_id": "m", "temprature": 1}
    )
    with pytest.raises(hydra.errors.InstantiationException) as info:
        hydra.utils.instantiate(cfg)
    # Hydra wraps it; the ConfigError is the cause and its full problem list survives the wrapping.
    assert isinstance(info.value.__cause__, ConfigError)
    assert [p.key for p in info.value.__cause__.problems] == ["temprature"]
    assert "did you mean 'temperature'" in str(info.value)


def test_config_warnings_find_the_spec_of_the_target_and_check_fallback_members() -> None:
    """smolagents' names work in a config but ``modelfactory check`` warns: the spec comes from the
    node's ``_target_``, and a FallbackModel's member configs are checked with theirs."""
    member = {"_target_": "CallableModel", "fn": "examples.custom_model.custom_model", "top_k": 4}
    node = {"_target_": "modelfactory.FallbackModel", "models": [member, {**member, "min_p": 0.1}]}
    assert [(w.key, w.fix, w.source) for w in config_warnings(node, source="x.yaml")] == [
        ("models[0].top_k", "write generation_kwargs.top_k", "x.yaml"),
        ("models[1].top_k", "write generation_kwargs.top_k", "x.yaml"),
        ("models[1].min_p", "write generation_kwargs.min_p", "x.yaml"),
    ]
    assert config_warnings({"_target_": "not.a.Model"}) == []  # a target that is no Model: nothing to say
