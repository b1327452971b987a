"""The Model base class itself, through a tiny in-test backend that records what it is handed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr

from modelfactory.errors import BackendError, ConfigError, MessageError, UnsupportedFeatureError
from modelfactory.messages import ChatMessage, ChatMessageStreamDelta, TokenUsage, ToolCall, ToolCallFunction
from modelfactory.model import GenerationRequest, Model, tool_to_schema
from modelfactory.settings import ModelSpec
from tests.timing import VirtualClock

SECRET = "sk-model-SECRET-abcdef123456"


class EchoSpec(ModelSpec):
    model_id: str = "echo-1"
    api_key: SecretStr | None = None
    reply: str = "Thought: ok\nObservation: hidden"


class EchoModel(Model):
    """Returns ``spec.reply`` (or raises ``to_raise``) and records every request."""

    Spec = EchoSpec
    spec: EchoSpec

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requests: list[GenerationRequest] = []
        self.to_raise: Exception | None = None

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        self.requests.append(req)
        if self.to_raise is not None:
            raise self.to_raise
        return ChatMessage(content=self.spec.reply, token_usage=TokenUsage(3, 4), raw={"r": 1})

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        self.requests.append(req)
        text = self.spec.reply
        for i in range(0, len(text), 2):
            yield ChatMessageStreamDelta(content=text[i : i + 2])
        if self.to_raise is not None:
            raise self.to_raise
        yield ChatMessageStreamDelta(token_usage=TokenUsage(3, 4))


class GrammarModel(EchoModel):
    supports_grammar: ClassVar[bool] = True


class NoStreamModel(Model):
    Spec = EchoSpec

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        return ChatMessage(content="x")


class StatusError(Exception):
    def __init__(self, text: str, status_code: int) -> None:
        super().__init__(text)
        self.status_code = status_code


MSGS = [{"role": "user", "content": "hi"}]


# --------------------------------------------------------------------------- build


def test_kwargs_are_validated_at_construction() -> None:
    with pytest.raises(ConfigError) as info:
        EchoModel(temperature=-1, replyy="x")
    assert {p.key for p in info.value.problems} == {"temperature", "replyy"}
    assert all(p.source == "EchoModel" for p in info.value.problems)


def test_identity_and_redacted_dict() -> None:
    m = EchoModel(api_key=SECRET, temperature=0.3)
    assert m.model_id == "echo-1"
    assert repr(m) == "EchoModel(model_id='echo-1')"
    d = m.to_dict()
    assert d["_target_"] == f"{__name__}.EchoModel"
    assert d["temperature"] == 0.3
    assert d["api_key"] == "**********"
    assert SECRET not in repr(d)
    assert SECRET not in repr(m)


# --------------------------------------------------------------------------- per-call kwargs


def test_per_call_kwargs_override_configured_defaults() -> None:
    m = EchoModel(
        temperature=0.1, max_tokens=10, top_p=0.5, seed=1, generation_kwargs={"top_k": 5, "foo": "a"}
    )
    m.generate(MSGS)
    assert m.requests[-1].params == {
        "temperature": 0.1,
        "max_tokens": 10,
        "top_p": 0.5,
        "seed": 1,
        "top_k": 5,
        "foo": "a",
    }
    m.generate(MSGS, temperature=0.9, max_tokens=99, top_k=1, new_param=True)
    assert m.requests[-1].params == {
        "temperature": 0.9,
        "max_tokens": 99,
        "top_p": 0.5,
        "seed": 1,
        "top_k": 1,
        "foo": "a",
        "new_param": True,
    }


def test_per_call_none_does_not_erase_a_default() -> None:
    m = EchoModel(temperature=0.1)
    m.generate(MSGS, temperature=None)
    assert m.requests[-1].params == {"temperature": 0.1}


def test_per_call_override_does_not_change_the_defaults() -> None:
    m = EchoModel(temperature=0.1)
    m.generate(MSGS, temperature=1.0)
    m.generate(MSGS)
    assert [r.params["temperature"] for r in m.requests] == [1.0, 0.1]
    assert m.spec.temperature == 0.1


def test_generate_and_call_are_the_same() -> None:
    m = EchoModel(temperature=0.2)
    a = m.generate(MSGS, stop_sequences=["Obs"], temperature=0.7)
    b = m(MSGS, stop_sequences=["Obs"], temperature=0.7)
    assert a.to_dict() == b.to_dict()
    assert a.content == "Thought: ok\n"
    assert m.requests[0] == m.requests[1]


def test_messages_are_normalised_with_the_configured_role_conversions() -> None:
    m = EchoModel(custom_role_conversions={"system": "user"})
    m.generate(
        [
            {"role": "system", "content": "s"},
            {"role": "tool-response", "content": [{"type": "text", "text": "r"}]},
        ]
    )
    assert m.requests[-1].messages == [{"role": "user", "content": "s"}, {"role": "user", "content": "r"}]


def test_malformed_messages_never_reach_the_backend() -> None:
    m = EchoModel()
    with pytest.raises(MessageError):
        m.generate([])
    with pytest.raises(MessageError):
        m.generate(MSGS, stop_sequences=[""])
    assert m.requests == []


# --------------------------------------------------------------------------- stop contract


def test_stop_is_trimmed_and_sent_when_supported() -> None:
    m = EchoModel()
    out = m.generate(MSGS, stop_sequences=["Observation:", "zzz"])
    assert out.content == "Thought: ok\n"
    assert out.token_usage == TokenUsage(3, 4)
    req = m.requests[-1]
    assert req.stop_sequences == ["Observation:", "zzz"]
    assert req.send_stop is True
    assert req.provider_stop == ["Observation:", "zzz"]


def test_stop_not_sent_but_still_trimmed_when_unsupported() -> None:
    m = EchoModel(supports_stop=False)
    out = m.generate(MSGS, stop_sequences=["Observation:"])
    assert out.content == "Thought: ok\n"
    req = m.requests[-1]
    assert req.provider_stop is None
    assert req.stop_sequences == ["Observation:"]


def test_no_stop_sequences_leaves_the_reply_alone() -> None:
    m = EchoModel()
    assert m.generate(MSGS).content == "Thought: ok\nObservation: hidden"
    assert m.requests[-1].provider_stop is None


def test_stream_applies_the_stop_contract_and_keeps_usage() -> None:
    m = EchoModel()
    deltas = list(m.generate_stream(MSGS, stop_sequences=["Observation:"]))
    assert "".join(d.content or "" for d in deltas) == "Thought: ok\n"
    assert all("Observation:" not in (d.content or "") for d in deltas)
    assert deltas[-1].token_usage == TokenUsage(3, 4)


def test_stream_without_stop_yields_everything() -> None:
    m = EchoModel()
    assert "".join(d.content or "" for d in m.generate_stream(MSGS)) == m.spec.reply


def test_stream_unsupported_backend() -> None:
    with pytest.raises(UnsupportedFeatureError, match="NoStreamModel does not support streaming"):
        list(NoStreamModel().generate_stream(MSGS))


# --------------------------------------------------------------------------- features


def test_grammar_on_a_backend_that_does_not_take_it() -> None:
    m = EchoModel()
    with pytest.raises(UnsupportedFeatureError, match="EchoModel cannot constrain output with `grammar`"):
        m.generate(MSGS, grammar={"type": "regex", "value": "a+"})
    with pytest.raises(UnsupportedFeatureError):
        list(m.generate_stream(MSGS, grammar="a+"))
    assert m.requests == []


def test_grammar_passes_through_where_supported() -> None:
    m = GrammarModel()
    m.generate(MSGS, grammar={"type": "regex", "value": "a+"})
    assert m.requests[-1].grammar == {"type": "regex", "value": "a+"}


def test_response_format_and_tools_unsupported() -> None:
    m = EchoModel()
    with pytest.raises(UnsupportedFeatureError, match="response_format"):
        m.generate(MSGS, response_format={"type": "json_object"})
    with pytest.raises(UnsupportedFeatureError, match="native tool calling"):
        m.generate(MSGS, tools_to_call_from=[{"type": "function", "function": {"name": "f"}}])
    assert m.requests == []


def test_tool_to_schema_from_a_smolagents_style_tool() -> None:
    class Tool:
        name = "get_weather"
        description = "Weather of a city"
        inputs = {
            "city": {"type": "string", "description": "the city"},
            "unit": {"type": "any", "description": "c/f", "nullable": True},
        }

    assert tool_to_schema(Tool()) == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "the city"},
                    "unit": {"type": "string", "description": "c/f"},
                },
                "required": ["city"],
            },
        },
    }
    with pytest.raises(MessageError, match="cannot turn int into a tool schema"):
        tool_to_schema(3)


# --------------------------------------------------------------------------- error wrapping


def test_unexpected_exception_becomes_backend_error_with_secrets_scrubbed() -> None:
    m = EchoModel(api_key=SECRET)
    original = KeyError(f"choices missing; request used key {SECRET}")
    m.to_raise = original
    with pytest.raises(BackendError) as info:
        m.generate(MSGS)
    err = info.value
    assert SECRET not in str(err)
    assert SECRET not in err.provider_message
    assert "KeyError" in str(err)
    assert "choices missing; request used key ***" in str(err)
    assert err.model_id == "echo-1"
    assert err.backend == "EchoModel"
    assert err.status is None
    assert err.__cause__ is original


def test_status_code_of_the_exception_is_kept(virtual_clock: VirtualClock) -> None:
    m = EchoModel()
    m.to_raise = StatusError("slow down", status_code=429)
    with pytest.raises(BackendError) as info:
        m.generate(MSGS)
    assert info.value.status == 429
    assert "(HTTP 429)" in str(info.value)
    # a 429 is retried (with the default back-off, on the test's clock: 2.3 s of real sleep before)
    assert len(m.requests) == len(virtual_clock.sleeps) + 1 > 1


def test_stream_errors_are_wrapped_and_scrubbed() -> None:
    m = EchoModel(api_key=SECRET, reply="abcdef")
    m.to_raise = RuntimeError(f"connection reset while sending {SECRET}")
    got: list[str] = []
    with pytest.raises(BackendError) as info:
        for d in m.generate_stream(MSGS):
            got.append(d.content or "")
    assert "".join(got) == "abcdef"
    assert SECRET not in str(info.value)
    assert "connection reset" in str(info.value)


def test_library_errors_are_not_rewrapped() -> None:
    m = EchoModel()
    m.to_raise = UnsupportedFeatureError("nope")
    with pytest.raises(UnsupportedFeatureError, match="^nope$"):
        m.generate(MSGS)


# --------------------------------------------------------------------------- parse_tool_calls


def test_parse_tool_calls_from_json_in_text() -> None:
    msg = ChatMessage(content='Action:\n{"name": "search", "arguments": {"q": "llama"}}\nThat is all.')
    out = EchoModel().parse_tool_calls(msg)
    assert out is msg
    assert out.tool_calls is not None and len(out.tool_calls) == 1
    call = out.tool_calls[0]
    assert call.function.name == "search"
    assert call.function.arguments == {"q": "llama"}
    assert call.id.startswith("call_")
    assert call.type == "function"


def test_a_parsed_tool_call_id_follows_the_prompt_and_reply_not_chance() -> None:
    """An agent writes the id into its next prompt: a random id gave a greedy local agent other tokens
    (and other answers) on every run. Same prompt and reply: same id; another prompt: another id."""
    text = '{"name": "add", "arguments": {"a": 2, "b": 3}}'

    def call_id(prompt: str | None) -> str:
        msg = ChatMessage(content=text, raw={"prompt": prompt} if prompt is not None else None)
        calls = EchoModel().parse_tool_calls(msg).tool_calls
        assert calls is not None
        return calls[0].id

    first = call_id("<|im_start|>user\nWhat is 2+3?")
    assert call_id("<|im_start|>user\nWhat is 2+3?") == first
    assert re.fullmatch(r"call_[0-9a-f]{12}", first)
    assert call_id("<|im_start|>user\nWhat is 2+3? Observation: 5") != first  # a later step
    assert call_id(None) == call_id(None) != first


def test_parse_tool_calls_accepts_parameters_alias_and_defaults_to_empty_args() -> None:
    m = EchoModel()
    a = m.parse_tool_calls(ChatMessage(content='{"name": "f", "parameters": {"x": 1}}'))
    assert a.tool_calls is not None and a.tool_calls[0].function.arguments == {"x": 1}
    b = m.parse_tool_calls(ChatMessage(content='{"name": "final_answer"}'))
    assert b.tool_calls is not None and b.tool_calls[0].function.arguments == {}


def test_parse_tool_calls_keeps_existing_tool_calls() -> None:
    existing = [ToolCall(id="c9", function=ToolCallFunction(name="g", arguments={}))]
    msg = ChatMessage(content='{"name": "other"}', tool_calls=existing)
    assert EchoModel().parse_tool_calls(msg).tool_calls == existing


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("no json here", "no tool call found in the model output: 'no json here'"),
        (None, "no tool call found"),
        ("{not json}", "holds no valid JSON tool call"),
        ('{"arguments": {}}', "holds no valid JSON tool call"),
        ('["name"]', "no tool call found"),
    ],
)
def test_parse_tool_calls_errors(content: str | None, match: str) -> None:
    with pytest.raises(BackendError, match=match) as info:
        EchoModel().parse_tool_calls(ChatMessage(content=content))
    assert info.value.backend == "EchoModel"
    assert info.value.model_id == "echo-1"
