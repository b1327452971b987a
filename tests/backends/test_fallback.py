"""FallbackModel against real peers: a scripted recording server first, real models after it."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from modelfactory import (
    BackendError,
    CallableModel,
    ConfigError,
    FallbackModel,
    OpenAIServerModel,
    build_model,
)
from modelfactory.backends.fallback import failure_kind
from tests.servers.recording import RecordingServer

MSGS = [{"role": "user", "content": "hi"}]
ONE_TRY = {"max_attempts": 1}


def local_reply(messages: list[dict[str, Any]]) -> str:
    return "from the local model. STOP here"


def api(server: RecordingServer, **kw: Any) -> dict[str, Any]:
    return {
        "_target_": "modelfactory.OpenAIServerModel",
        "model_id": "remote",
        "api_base": f"{server.url}/v1",
        "retry": ONE_TRY,
        **kw,
    }


LOCAL = {"_target_": "modelfactory.CallableModel", "fn": "tests.backends.test_fallback.local_reply"}


@pytest.mark.parametrize(
    ("status", "kind"), [(429, "rate_limit"), (500, "server_error"), (503, "server_error"), (408, "timeout")]
)
def test_falls_back_on_configured_status(recording_server: RecordingServer, status: int, kind: str) -> None:
    recording_server.enqueue(status, {"error": {"message": "busy", "type": "server_error"}})
    model = FallbackModel(models=[api(recording_server), LOCAL])
    reply = model(MSGS, stop_sequences=[" STOP"])
    assert reply.content == "from the local model."
    assert reply.raw["served_by"] == {"index": 1, "backend": "CallableModel", "model_id": "callable"}
    assert reply.raw["failed"][0]["status"] == status
    assert len(recording_server.requests) == 1  # the member's own policy made one attempt
    assert failure_kind(BackendError("x", status=status, retryable=True)) == kind


def test_first_model_serves_when_healthy(recording_server: RecordingServer) -> None:
    reply = FallbackModel(models=[api(recording_server), LOCAL])(MSGS, temperature=0.3)
    assert reply.content == "Hello from the recording server"
    assert reply.raw["served_by"]["index"] == 0 and reply.raw["failed"] == []
    assert recording_server.last.body["temperature"] == 0.3  # per-call kwargs reach the member


def test_connection_refused_falls_back() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    dead = {
        "_target_": "modelfactory.OpenAIServerModel",
        "model_id": "m",
        "api_base": f"http://127.0.0.1:{port}/v1",
    }
    model = FallbackModel(models=[{**dead, "retry": ONE_TRY}, LOCAL])
    assert model(MSGS).content.startswith("from the local model")


def test_non_configured_error_is_raised_at_once(recording_server: RecordingServer) -> None:
    recording_server.enqueue(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
    model = FallbackModel(models=[api(recording_server), LOCAL])
    with pytest.raises(BackendError) as err:
        model(MSGS)
    assert err.value.status == 401 and "bad key" in str(err.value)


def test_fallback_on_any_includes_auth_errors(recording_server: RecordingServer) -> None:
    recording_server.enqueue(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
    model = FallbackModel(models=[api(recording_server), LOCAL], fallback_on=["any"])
    assert model(MSGS).raw["served_by"]["index"] == 1


def test_all_failed_lists_every_attempt(recording_server: RecordingServer) -> None:
    for _ in range(2):
        recording_server.enqueue(503, {"error": {"message": "down", "type": "server_error"}})
    model = FallbackModel(models=[api(recording_server, model_id="a"), api(recording_server, model_id="b")])
    with pytest.raises(BackendError) as err:
        model(MSGS)
    text = str(err.value)
    assert "all 2 models failed" in text and "'a'" in text and "'b'" in text
    assert len(recording_server.requests) == 2  # no retry stacked on top of the members' own


def test_stream_falls_back_before_the_first_delta(recording_server: RecordingServer) -> None:
    recording_server.enqueue(500, {"error": {"message": "down", "type": "server_error"}})
    model = FallbackModel(models=[api(recording_server), api(recording_server, model_id="second")])
    text = "".join(d.content or "" for d in model.generate_stream(MSGS, stop_sequences=["server"]))
    assert text == "Hello from the recording "
    assert recording_server.last.body["model"] == "second"


def test_nested_config_problems_name_the_member() -> None:
    with pytest.raises(ConfigError) as err:
        FallbackModel(
            models=[{"_target_": "modelfactory.OpenAIServerModel", "model_id": "m", "temprature": 1}]
        )
    assert "models[0].temprature" in str(err.value) and "did you mean 'temperature'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        FallbackModel(models=[], fallback_on=["sometimes"])
    assert "models" in str(err.value) and "fallback_on" in str(err.value)


def test_built_from_the_shipped_config_and_hydra_instantiate() -> None:
    from pathlib import Path

    import hydra
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[2] / "modelfactory" / "conf"
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        cfg = compose(config_name="config", overrides=["model=fallback_example"])
    for model in (hydra.utils.instantiate(cfg.model), build_model(cfg.model)):
        assert isinstance(model, FallbackModel)
        assert isinstance(model.models[0], OpenAIServerModel)
        assert type(model.models[1]).__name__ == "TransformersModel"
        assert model.to_dict()["models"][0]["model_id"] == "tiny-llama"
    assert isinstance(FallbackModel(models=[CallableModel(fn=local_reply)]).models[0], CallableModel)


def test_runner_rows_record_which_model_served(recording_server: RecordingServer, tmp_path: Any) -> None:
    import json

    from modelfactory.job.runner import run_items

    recording_server.enqueue(429, {"error": {"message": "slow down", "type": "requests"}})
    model = FallbackModel(models=[api(recording_server), LOCAL])
    items = [{"id": "a", "messages": MSGS}, {"id": "b", "messages": MSGS}]
    run_items(model, items, concurrency=1, results_path=tmp_path / "results.jsonl", progress=False)
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    assert sorted(r["served_by"]["index"] for r in rows.values()) == [0, 1]
