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
    model = build_model(config(f"{served}/v1", model_id="tiny-llama"))
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
