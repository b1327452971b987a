"""Tools and structured output on the wire: schemas sent natively, ``tool_calls`` parsed into ``ToolCall``s,
``response_format`` forwarded, ``grammar`` refused where the backend cannot take it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from modelfactory.backends.azure import AzureOpenAIServerModel
from modelfactory.backends.hf_inference import HfApiModel
from modelfactory.backends.litellm import LiteLLMModel
from modelfactory.backends.openai import OpenAIServerModel
from modelfactory.backends.transformers import TransformersModel, tools_block
from modelfactory.errors import UnsupportedFeatureError
from modelfactory.messages import ToolCall
from modelfactory.model import Model
from tests.servers.recording import RecordingServer

pytestmark = pytest.mark.filterwarnings("ignore:Item 'summary' on TypedDict:UserWarning")

KEY = "sk-tools-KEY-1111222233334444"
MSGS = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city"}},
            "required": ["city"],
        },
    },
}
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


class WeatherTool:
    """A smolagents-style tool object: name, description, inputs."""

    name = "get_weather"
    description = "Weather for a city"
    inputs = {"city": {"type": "string", "description": "the city"}}


@pytest.fixture(autouse=True)
def _hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


BACKENDS: dict[str, Callable[[RecordingServer], Model]] = {
    "openai": lambda s: OpenAIServerModel(
        model_id="m", api_base=f"{s.url}/v1", api_key=KEY, retry={"max_attempts": 1}
    ),
    "azure": lambda s: AzureOpenAIServerModel(
        model_id="dep", azure_endpoint=s.url, api_key=KEY, api_version="2024-10-21", retry={"max_attempts": 1}
    ),
    "litellm": lambda s: LiteLLMModel(
        model_id="openai/m", api_base=f"{s.url}/v1", api_key=KEY, retry={"max_attempts": 1}
    ),
    "hf": lambda s: HfApiModel(model_id="org/m", base_url=s.url, retry={"max_attempts": 1}),
}


@pytest.fixture(params=sorted(BACKENDS))
def make(request: pytest.FixtureRequest) -> Callable[[RecordingServer], Model]:
    return BACKENDS[request.param]


def tool_call_completion(name: str = "get_weather", arguments: Any = None, call_id: str = "call_abc") -> dict:
    args = {"city": "Paris"} if arguments is None else arguments
    return {
        "id": "chatcmpl-tools",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "system_fingerprint": "fp_tools",  # the HF backend reads it too: TGI's type requires it
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args)},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
    }


def test_tools_sent_natively_and_tool_calls_parsed(
    make: Callable[[RecordingServer], Model], recording_server: RecordingServer
) -> None:
    recording_server.enqueue(200, tool_call_completion())
    out = make(recording_server).generate(MSGS, tools_to_call_from=[WEATHER])
    body = recording_server.last.body
    assert body["tools"] == [WEATHER]
    assert out.tool_calls and len(out.tool_calls) == 1
    call = out.tool_calls[0]
    assert isinstance(call, ToolCall)
    assert call.id == "call_abc"
    assert call.function.name == "get_weather"
    assert call.function.arguments == {"city": "Paris"}  # parsed from the JSON string
    assert out.token_usage is not None and out.token_usage.input_tokens == 20


def test_tool_objects_become_schemas(
    make: Callable[[RecordingServer], Model], recording_server: RecordingServer
) -> None:
    recording_server.enqueue(200, tool_call_completion())
    make(recording_server).generate(MSGS, tools_to_call_from=[WeatherTool()])
    assert recording_server.last.body["tools"] == [WEATHER]


def test_async_tool_calls(
    make: Callable[[RecordingServer], Model], recording_server: RecordingServer
) -> None:
    recording_server.enqueue(200, tool_call_completion(arguments={"city": "Oslo"}))
    out = asyncio.run(make(recording_server).agenerate(MSGS, tools_to_call_from=[WEATHER]))
    assert recording_server.last.body["tools"] == [WEATHER]
    assert out.tool_calls and out.tool_calls[0].function.arguments == {"city": "Oslo"}


def test_tool_result_conversation_on_the_wire(
    make: Callable[[RecordingServer], Model], recording_server: RecordingServer
) -> None:
    """The second turn of a tool loop (assistant tool call + tool response) goes out as valid messages."""
    msgs = [
        *MSGS,
        {"role": "tool-call", "content": "Calling tools: get_weather({'city': 'Paris'})"},
        {"role": "tool-response", "content": "Observation: sunny, 21 C"},
    ]
    out = make(recording_server).generate(msgs, tools_to_call_from=[WEATHER])
    sent = recording_server.last.body["messages"]
    assert {m["role"] for m in sent} <= {"system", "user", "assistant", "tool"}
    assert "sunny, 21 C" in json.dumps(sent)
    assert out.content == "Hello from the recording server"


def test_response_format_forwarded(
    make: Callable[[RecordingServer], Model], recording_server: RecordingServer
) -> None:
    make(recording_server).generate(MSGS, response_format=SCHEMA)
    sent = recording_server.last.body["response_format"]
    if isinstance(make(recording_server), HfApiModel):
        # huggingface_hub rewrites an OpenAI json_schema for TGI-style servers
        assert sent["type"] in ("json_object", "json_schema")
        assert json.dumps(SCHEMA["json_schema"]["schema"], sort_keys=True) in json.dumps(sent, sort_keys=True)
    else:
        assert sent == SCHEMA


def test_grammar_refused_by_openai_style_backends(recording_server: RecordingServer) -> None:
    for name in ("openai", "azure", "litellm"):
        with pytest.raises(UnsupportedFeatureError, match="grammar"):
            BACKENDS[name](recording_server).generate(MSGS, grammar={"type": "regex", "value": "a+"})
    assert recording_server.requests == []


def test_grammar_forwarded_tgi_style_by_hf(recording_server: RecordingServer) -> None:
    BACKENDS["hf"](recording_server).generate(MSGS, grammar={"type": "regex", "value": "a+"})
    assert recording_server.last.body["response_format"] == {"type": "regex", "value": "a+"}


# --------------------------------------------------------------------------- TransformersModel


@pytest.fixture(scope="module")
def tiny() -> TransformersModel:
    return TransformersModel(model_id="builtin:tiny-llama", max_new_tokens=8, seed=0)


def test_transformers_renders_tools_in_prompt(tiny: TransformersModel) -> None:
    plain = tiny.chat_prompt(MSGS)
    with_tools = tiny.chat_prompt(MSGS, [WEATHER])
    assert with_tools != plain
    assert "get_weather" in with_tools and '"name": <tool name>' in with_tools
    # the shipped ChatML template ignores tools=: the block goes in as a system message
    assert tools_block([WEATHER]) in with_tools
    sys_prompt = tiny.chat_prompt([{"role": "system", "content": "Be brief."}, *MSGS], [WEATHER])
    assert sys_prompt.count("<|im_start|>system") == 1 and "Be brief." in sys_prompt


def test_transformers_generate_with_tools(tiny: TransformersModel) -> None:
    out = tiny.generate(MSGS, tools_to_call_from=[WeatherTool()])
    assert "get_weather" in out.raw["prompt"]
    # the tiny model (seeded) writes no JSON tool call: the reply stays its text, unparsed, and no error
    assert "{" not in out.raw["generated_text"] and out.raw["generated_text"].strip()
    assert out.tool_calls is None
    assert out.content == out.raw["generated_text"]


def test_transformers_parses_json_tool_call_from_text(
    tiny: TransformersModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = 'Sure. {"name": "get_weather", "arguments": {"city": "Paris"}}'
    monkeypatch.setattr(tiny.runtime.tokenizer, "decode", lambda ids, **kw: text)
    out = tiny.generate(MSGS, tools_to_call_from=[WEATHER])
    assert out.tool_calls and out.tool_calls[0].function.name == "get_weather"
    assert out.tool_calls[0].function.arguments == {"city": "Paris"}
