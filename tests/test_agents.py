"""smolagents agents driven by a model built from our config, over real HTTP (the recording server scripted
with tool calls / code blocks, and ``modelfactory serve`` running the tiny model) and in-process (the tiny
model itself)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from modelfactory import build_model
from tests.servers.recording import RecordingServer

smolagents = pytest.importorskip("smolagents")

KEY = "sk-agents-KEY-1111222233334444"
CONTEXT = 16384  # an agent's prompts pass the tiny model's 512 positions: allowed here (its replies are noise anyway)


def config(api_base: str, model_id: str = "scripted") -> dict[str, Any]:
    return {
        "_target_": "modelfactory.OpenAIServerModel",
        "model_id": model_id,
        "api_base": api_base,
        "api_key": KEY,
        "retry": {"max_attempts": 1},
    }


def completion(content: str | None = None, tool_call: tuple[str, dict[str, Any]] | None = None) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_call is not None:
        name, args = tool_call
        message["tool_calls"] = [
            {
                "id": f"call_{name}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
        ]
    return {
        "id": "chatcmpl-agent",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_call else "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
    }


def add(a: int, b: int) -> int:
    """Adds two integers.

    Args:
        a: first number
        b: second number
    """
    return a + b


with warnings.catch_warnings():  # smolagents warns about module-level tools in pytest's rewritten modules
    warnings.simplefilter("ignore", UserWarning)
    add = smolagents.tool(add)  # noqa: F811


def test_tool_calling_agent_against_scripted_server(recording_server: RecordingServer) -> None:
    recording_server.enqueue(200, completion(tool_call=("add", {"a": 2, "b": 3})))
    recording_server.enqueue(200, completion(tool_call=("final_answer", {"answer": "5"})))
    model = build_model(config(f"{recording_server.url}/v1"))
    agent = smolagents.ToolCallingAgent(tools=[add], model=model, max_steps=4, verbosity_level=0)

    assert str(agent.run("What is 2+3?")) == "5"

    assert len(recording_server.requests) == 2
    first, second = (r.body for r in recording_server.requests)
    names = {t["function"]["name"] for t in first["tools"]}
    assert {"add", "final_answer"} <= names  # the agent's tools went out as native schemas
    assert first["tools"] == second["tools"]
    # the observation of the tool call reached the second request
    observations = [m for m in second["messages"] if "Observation" in json.dumps(m)]
    assert observations and "5" in json.dumps(observations[-1])
    assert {m["role"] for m in second["messages"]} <= {"system", "user", "assistant", "tool"}
    usage = agent.monitor.get_total_token_counts()
    assert (usage.input_tokens, usage.output_tokens) == (200, 20)


def test_code_agent_against_scripted_server(recording_server: RecordingServer) -> None:
    recording_server.enqueue(
        200, completion("Thought: compute it.\n<code>\nresult = 6 * 7\nprint(result)\n</code>")
    )
    recording_server.enqueue(200, completion("Thought: done.\n<code>\nfinal_answer(result)\n</code>"))
    model = build_model(config(f"{recording_server.url}/v1"))
    agent = smolagents.CodeAgent(tools=[], model=model, max_steps=4, verbosity_level=0)

    assert agent.run("What is 6*7?") == 42

    assert len(recording_server.requests) == 2
    first, second = (r.body for r in recording_server.requests)
    assert "Observation:" in first["stop"]  # the agent's stop sequences went to the provider
    assert "42" in json.dumps(second["messages"])  # the printed output came back as an observation
    usage = agent.monitor.get_total_token_counts()
    assert (usage.input_tokens, usage.output_tokens) == (200, 20)


# --------------------------------------------------------------------------- against `modelfactory serve`


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    pytest.importorskip("torch")
    from modelfactory.backends.transformers import TransformersModel
    from modelfactory.serve import BackgroundServer, ServerSettings

    tiny = TransformersModel(
        model_id="builtin:tiny-llama", dtype="float32", max_new_tokens=16, context_length=CONTEXT
    ).load()
    # The agent's system prompt is ~2.4k tokens, past the tiny model's 512 positions (its RoPE runs on).
    settings = ServerSettings(port=0, api_key=KEY, log_level="warning", max_context_tokens=8192)
    srv = BackgroundServer(tiny, settings).start()
    try:
        yield srv.url
    finally:
        srv.stop()


@pytest.mark.server
def test_tool_calling_agent_against_serve(served: str) -> None:
    """The tiny model writes no valid tool call: the loop must still run every step (each a parsing error
    the agent records), end at max_steps with a final answer asked of the model, and count tokens."""
    # tool_choice "auto": serve answers "required" (what a ToolCallingAgent sends by default) with a 400 on
    # a TransformersModel, which cannot constrain its decoding to a call (README, serve)
    cfg = {**config(f"{served}/v1", model_id="tiny-llama"), "generation_kwargs": {"tool_choice": "auto"}}
    model = build_model(cfg)
    agent = smolagents.ToolCallingAgent(tools=[add], model=model, max_steps=2, verbosity_level=0)
    answer = agent.run("What is 2+3?")
    assert isinstance(answer, str)
    action_steps = [s for s in agent.memory.steps if isinstance(s, smolagents.memory.ActionStep)]
    # two steps, each a parsing error recorded (not raised), then the final-answer step max_steps adds
    assert len(action_steps) == 3
    assert all(s.error is not None for s in action_steps[:2])
    assert "no tool call found" in str(action_steps[0].error)
    usage = agent.monitor.get_total_token_counts()
    assert usage.input_tokens > 0 and usage.output_tokens > 0


@pytest.mark.server
def test_code_agent_against_serve(served: str) -> None:
    """The tiny model writes no code block: each step is a recorded parsing error, then max_steps."""
    model = build_model(config(f"{served}/v1", model_id="tiny-llama"))
    agent = smolagents.CodeAgent(tools=[], model=model, max_steps=2, verbosity_level=0)
    answer = agent.run("What is 6*7?")
    assert answer is not None
    action_steps = [s for s in agent.memory.steps if isinstance(s, smolagents.memory.ActionStep)]
    assert len(action_steps) == 3  # max_steps, then the final-answer step
    usage = agent.monitor.get_total_token_counts()
    assert usage.input_tokens > 0 and usage.output_tokens > 0


# --------------------------------------------------------------------------- the local model in-process


def test_code_agent_on_the_local_model_prefills_only_each_steps_new_turns() -> None:
    """Every step resends the whole conversation (~5k tokens here); the prompt cache reuses the KV of
    the previous step's prompt and reply, so each step after the first prefills only what is new."""
    pytest.importorskip("torch")
    from modelfactory.backends.transformers import TransformersModel

    tiny = TransformersModel(
        model_id="builtin:tiny-llama", dtype="float32", max_new_tokens=16, context_length=CONTEXT
    )
    tiny.clear_prompt_cache()
    agent = smolagents.CodeAgent(tools=[], model=tiny, max_steps=3, verbosity_level=0)
    agent.run("What is 6*7?")
    replies = [
        s.model_output_message
        for s in agent.memory.steps
        if isinstance(s, smolagents.memory.ActionStep) and s.model_output_message is not None
    ]
    assert len(replies) == 3
    assert replies[0].raw["cached_prompt_tokens"] == 0
    for before, now in zip(replies[:-1], replies[1:], strict=True):
        seen = before.token_usage.input_tokens + before.token_usage.output_tokens
        assert before.token_usage.input_tokens < now.raw["cached_prompt_tokens"] < seen
        assert now.token_usage.input_tokens > seen  # usage still counts the whole prompt


# --------------------------------------------------------------------------- streams with parallel tool calls
# Each API backend against the recording server scripted as its provider would answer (OpenAI's SSE chunks:
# every call's id and name on its first piece, the arguments in fragments, two calls interleaved), with
# the agents streaming (stream_outputs=True: smolagents merges the pieces by index) and not.

BACKENDS = ("openai", "azure", "hf", "litellm")
USAGE = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
PARALLEL = [("call_a", "add", {"a": 2, "b": 3}), ("call_b", "add", {"a": 4, "b": 5})]


def backend_config(kind: str, url: str) -> dict[str, Any]:
    one = {"retry": {"max_attempts": 1}}
    if kind == "openai":
        return config(f"{url}/v1")
    if kind == "azure":
        return {
            "_target_": "modelfactory.AzureOpenAIServerModel",
            "model_id": "scripted-deployment",
            "azure_endpoint": url,
            "api_key": KEY,
            "api_version": "2024-10-21",
            **one,
        }
    if kind == "hf":
        return {
            "_target_": "modelfactory.HfApiModel",
            "model_id": "scripted",
            "base_url": url,
            "token": KEY,
            **one,
        }
    assert kind == "litellm"  # its real client (litellm -> openai SDK) against the fake
    return {
        "_target_": "modelfactory.LiteLLMModel",
        "model_id": "openai/scripted",
        "api_base": f"{url}/v1",
        "api_key": KEY,
        **one,
    }


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub refuses every request (127.0.0.1 too) when HF_HUB_OFFLINE was set at its import."""
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stream",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "scripted",
        "system_fingerprint": "fp_scripted",  # huggingface_hub's chunk type requires it
        "choices": [{"index": 0, "delta": {"role": "assistant", **delta}, "finish_reason": finish}],
    }


def usage_chunk() -> dict[str, Any]:
    return {**chunk({}), "choices": [], "usage": dict(USAGE)}


def tool_calls_stream(calls: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """OpenAI's shape: a call's id, type and name on its first piece, its arguments in two fragments
    without id; the calls interleaved."""
    first, halves = [], []
    for i, (call_id, name, args) in enumerate(calls):
        text = json.dumps(args)
        cut = len(text) // 2
        first.append(
            {"index": i, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        )
        halves.append(
            (
                {"index": i, "function": {"arguments": text[:cut]}},
                {"index": i, "function": {"arguments": text[cut:]}},
            )
        )
    pieces = first + [h[0] for h in halves] + [h[1] for h in halves]
    out = [chunk({"content": None, "tool_calls": [p]}) for p in pieces]
    return out + [chunk({}, "tool_calls"), usage_chunk()]


def text_stream(text: str) -> list[dict[str, Any]]:
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    return [chunk({"content": p}) for p in pieces] + [chunk({}, "stop"), usage_chunk()]


def reply(content: str | None = None, calls: list[tuple[str, str, dict[str, Any]]] = ()) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, n, a in calls
        ]
    body = completion(content)
    body["choices"][0]["message"] = message
    body["choices"][0]["finish_reason"] = "tool_calls" if calls else "stop"
    body["usage"] = dict(USAGE)
    body["system_fingerprint"] = "fp_scripted"
    return body


def script_calls(server: RecordingServer, stream: bool, calls: list[tuple[str, str, dict[str, Any]]]) -> None:
    server.enqueue(200, tool_calls_stream(calls) if stream else reply(calls=calls))


def script_text(server: RecordingServer, stream: bool, text: str) -> None:
    server.enqueue(200, text_stream(text) if stream else reply(text))


@pytest.mark.server
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
@pytest.mark.parametrize("kind", BACKENDS)
def test_tool_calling_agent_parallel_calls(
    kind: str, stream: bool, recording_server: RecordingServer, hub_online: None
) -> None:
    script_calls(recording_server, stream, PARALLEL)
    script_calls(recording_server, stream, [("call_c", "final_answer", {"answer": "5 and 9"})])
    model = build_model(backend_config(kind, recording_server.url))
    agent = smolagents.ToolCallingAgent(
        tools=[add], model=model, max_steps=4, verbosity_level=0, stream_outputs=stream
    )

    assert agent.run("What are 2+3 and 4+5?") == "5 and 9"

    steps = [s for s in agent.memory.steps if isinstance(s, smolagents.memory.ActionStep)]
    assert steps[0].error is None
    # both parallel calls put together from their pieces, each with its own id and arguments
    calls = [(c.id, c.name, c.arguments) for c in steps[0].tool_calls]
    assert calls == [(i, n, a) for i, n, a in PARALLEL]
    assert "5" in str(steps[0].observations) and "9" in str(steps[0].observations)
    bodies = [r.body for r in recording_server.requests]
    assert len(bodies) == 2
    for body in bodies:
        assert bool(body.get("stream")) is stream
        assert body["tool_choice"] == "required"  # what smolagents sends with tools
        assert {"add", "final_answer"} <= {t["function"]["name"] for t in body["tools"]}
    usage = agent.monitor.get_total_token_counts()
    assert (usage.input_tokens, usage.output_tokens) == (200, 20)


@pytest.mark.server
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
@pytest.mark.parametrize("kind", BACKENDS)
def test_code_agent_streams(
    kind: str, stream: bool, recording_server: RecordingServer, hub_online: None
) -> None:
    script_text(
        recording_server, stream, "Thought: compute it.\n<code>\nresult = 6 * 7\nprint(result)\n</code>"
    )
    script_text(recording_server, stream, "Thought: done.\n<code>\nfinal_answer(result)\n</code>")
    model = build_model(backend_config(kind, recording_server.url))
    agent = smolagents.CodeAgent(tools=[], model=model, max_steps=4, verbosity_level=0, stream_outputs=stream)

    assert agent.run("What is 6*7?") == 42

    first, second = (r.body for r in recording_server.requests)
    assert bool(first.get("stream")) is stream
    assert "tools" not in first and "tool_choice" not in first  # no tools: no tool_choice either
    assert "42" in json.dumps(second["messages"])  # the printed output came back as an observation
    usage = agent.monitor.get_total_token_counts()
    assert (usage.input_tokens, usage.output_tokens) == (200, 20)
