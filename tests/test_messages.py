"""Message normalisation, ChatMessage/TokenUsage, stop-sequence validation, trim_at_stop and StopFilter."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from modelfactory.errors import MessageError
from modelfactory.messages import (
    DEFAULT_ROLE_CONVERSIONS,
    ChatMessage,
    MessageRole,
    StopFilter,
    TokenUsage,
    ToolCall,
    ToolCallFunction,
    normalize_messages,
    normalize_stop_sequences,
    trim_at_stop,
)

# --------------------------------------------------------------------------- normalisation: inputs


def test_dict_messages_pass_through() -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert normalize_messages(msgs) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]


def test_chat_message_inputs() -> None:
    msgs = [ChatMessage(role="user", content="hello"), ChatMessage(role="assistant", content="hey")]
    assert normalize_messages(msgs) == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hey"},
    ]


def test_enum_roles_are_accepted() -> None:
    out = normalize_messages(
        [{"role": MessageRole.USER, "content": "a"}, ChatMessage(role=MessageRole.SYSTEM, content="b")]
    )
    assert out == [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]
    assert all(type(m["role"]) is str for m in out)


def test_objects_with_role_and_content_attributes() -> None:
    @dataclass
    class SmolMessage:  # what smolagents hands over: an object, not a dict
        role: str
        content: Any

    out = normalize_messages([SmolMessage("user", [{"type": "text", "text": "from an object"}])])
    assert out == [{"role": "user", "content": "from an object"}]


def test_tuple_and_generator_of_messages() -> None:
    expected = [{"role": "user", "content": "x"}]
    assert normalize_messages(({"role": "user", "content": "x"},)) == expected
    assert normalize_messages(m for m in [{"role": "user", "content": "x"}]) == expected


def test_list_of_text_parts_becomes_one_string() -> None:
    msgs = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "line 1"}, "line 2", {"type": "text", "text": "line 3"}],
        }
    ]
    assert normalize_messages(msgs) == [{"role": "user", "content": "line 1\nline 2\nline 3"}]


def test_image_parts_become_image_url_parts() -> None:
    msgs = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image", "image": "iVBORw0KGgo="},
                {"type": "image", "image": "https://example.com/cat.png"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
                {"type": "image_url", "image_url": "http://example.com/dog.png"},
            ],
        }
    ]
    assert normalize_messages(msgs) == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "http://example.com/dog.png"}},
            ],
        }
    ]


def test_flatten_messages_as_text_joins_text_parts() -> None:
    msgs = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert normalize_messages(msgs, flatten_messages_as_text=True) == [{"role": "user", "content": "a\nb"}]


def test_flatten_messages_as_text_refuses_images() -> None:
    msgs = [{"role": "user", "content": [{"type": "image", "image": "https://example.com/x.png"}]}]
    with pytest.raises(MessageError, match=r"messages\[0\]\.content\[0\]: image parts cannot be sent"):
        normalize_messages(msgs, flatten_messages_as_text=True)


def test_tool_fields_of_dict_messages_are_kept() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    out = normalize_messages(
        [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"},
        ]
    )
    assert out[1] == {"role": "assistant", "content": None, "tool_calls": calls}
    assert out[2] == {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"}


# --------------------------------------------------------------------------- role conversions


def test_default_role_conversions() -> None:
    assert DEFAULT_ROLE_CONVERSIONS == {"tool-call": "assistant", "tool-response": "user"}
    out = normalize_messages(
        [{"role": "tool-call", "content": "calling f"}, {"role": "tool-response", "content": "f said 1"}]
    )
    assert [m["role"] for m in out] == ["assistant", "user"]


def test_custom_role_conversions_are_merged_over_defaults_not_substituted() -> None:
    msgs = [
        {"role": "system", "content": "s"},
        {"role": "tool-call", "content": "c"},
        {"role": "tool-response", "content": "r"},
    ]
    out = normalize_messages(msgs, role_conversions={"system": "user"})
    # the custom mapping applies, and the defaults still do
    assert [m["role"] for m in out] == ["user", "assistant", "user"]


def test_custom_role_conversion_overrides_a_default() -> None:
    out = normalize_messages(
        [{"role": "tool-response", "content": "r"}], role_conversions={"tool-response": "tool"}
    )
    assert out[0]["role"] == "tool"


def test_custom_role_conversion_source_may_be_a_new_role() -> None:
    out = normalize_messages([{"role": "critic", "content": "meh"}], role_conversions={"critic": "user"})
    assert out == [{"role": "user", "content": "meh"}]


def test_defaults_are_not_mutated_by_custom_conversions() -> None:
    before = dict(DEFAULT_ROLE_CONVERSIONS)
    normalize_messages([{"role": "user", "content": "x"}], role_conversions={"tool-call": "user"})
    assert before == DEFAULT_ROLE_CONVERSIONS


# --------------------------------------------------------------------------- normalisation: errors


@pytest.mark.parametrize("bad", [[], ()])
def test_empty_messages(bad: Any) -> None:
    with pytest.raises(MessageError, match="messages is empty"):
        normalize_messages(bad)


@pytest.mark.parametrize(
    ("bad", "type_name"), [("hello", "str"), (b"hello", "bytes"), (None, "NoneType"), (42, "int")]
)
def test_messages_of_the_wrong_type(bad: Any, type_name: str) -> None:
    with pytest.raises(MessageError, match=rf"messages must be a list .* got {type_name}$"):
        normalize_messages(bad)


def test_a_single_dict_instead_of_a_list_is_named_as_such() -> None:
    with pytest.raises(MessageError, match="must be a list"):
        normalize_messages({"role": "user", "content": "hi"})


def test_unknown_role() -> None:
    with pytest.raises(
        MessageError, match=r"messages\[1\]: unknown role 'robot' \(expected one of \["
    ) as info:
        normalize_messages([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}])
    for role in ("user", "assistant", "system", "tool-call", "tool-response"):
        assert f"'{role}'" in str(info.value)


def test_non_string_role() -> None:
    with pytest.raises(MessageError, match=r"messages\[0\]: unknown role 3"):
        normalize_messages([{"role": 3, "content": "a"}])


def test_missing_role() -> None:
    with pytest.raises(MessageError, match=r"messages\[0\]: missing 'role'"):
        normalize_messages([{"content": "a"}])


def test_missing_content() -> None:
    with pytest.raises(MessageError, match=r"messages\[0\]: missing 'content'"):
        normalize_messages([{"role": "user"}])


def test_non_string_part() -> None:
    with pytest.raises(
        MessageError, match=r"messages\[0\]\.content\[1\]: a content part must be a dict, got int"
    ):
        normalize_messages([{"role": "user", "content": ["ok", 7]}])


def test_text_part_with_non_string_text() -> None:
    with pytest.raises(
        MessageError, match=r"messages\[0\]\.content\[0\]: a text part needs a string 'text', got list"
    ):
        normalize_messages([{"role": "user", "content": [{"type": "text", "text": ["no"]}]}])


def test_unknown_part_type() -> None:
    with pytest.raises(MessageError, match=r"unknown content part type 'audio'"):
        normalize_messages([{"role": "user", "content": [{"type": "audio", "audio": "x"}]}])


@pytest.mark.parametrize("image", [None, "", 123])
def test_image_part_without_a_url(image: Any) -> None:
    with pytest.raises(MessageError, match="an image part needs a URL, a base64 string or a PIL image"):
        normalize_messages([{"role": "user", "content": [{"type": "image", "image": image}]}])


@pytest.mark.parametrize("kind", ["image", "image_url"])
def test_a_pil_image_part_is_sent_as_a_base64_png(kind: str) -> None:
    """Agents store screenshots as PIL images: they go to API backends as PNG data URLs (smolagents'
    encoding), pixels intact."""
    import base64
    import io

    image_module = pytest.importorskip("PIL.Image")
    image = image_module.new("RGB", (3, 2), (10, 200, 30))
    part = {"type": "image", "image": image} if kind == "image" else {"type": kind, "image_url": image}
    (msg,) = normalize_messages([{"role": "user", "content": [{"type": "text", "text": "see"}, part]}])
    url = msg["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = image_module.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (3, 2) and decoded.getpixel((2, 1)) == (10, 200, 30)


@pytest.mark.parametrize(
    ("content", "type_name"), [(42, "int"), ({"type": "text", "text": "x"}, "dict"), (b"raw", "bytes")]
)
def test_content_of_the_wrong_type(content: Any, type_name: str) -> None:
    with pytest.raises(
        MessageError, match=rf"'content' must be a string or a list of parts, got {type_name}"
    ):
        normalize_messages([{"role": "user", "content": content}])


# --------------------------------------------------------------------------- output types


def test_token_usage_total_is_derived() -> None:
    u = TokenUsage(input_tokens=3, output_tokens=4)
    assert u.total_tokens == 7
    assert u.to_dict() == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    s = u + TokenUsage(10, 20)
    assert (s.input_tokens, s.output_tokens, s.total_tokens) == (13, 24, 37)


def test_chat_message_round_trip() -> None:
    msg = ChatMessage(
        role="assistant",
        content="hi",
        tool_calls=[ToolCall(id="c1", function=ToolCallFunction(name="f", arguments={"x": 1}))],
        token_usage=TokenUsage(1, 2),
        raw=object(),
    )
    data = msg.to_dict()
    assert data == {
        "role": "assistant",
        "content": "hi",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}],
        "token_usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
    }
    assert msg.dict() == data
    assert json.loads(msg.model_dump_json()) == data
    back = ChatMessage.from_dict(data)
    assert back.to_dict() == data
    assert back.raw is None


def test_chat_message_enum_role_serialises_as_string() -> None:
    assert ChatMessage(role=MessageRole.USER, content="x").to_dict()["role"] == "user"


# --------------------------------------------------------------------------- stop sequences


def test_normalize_stop_sequences() -> None:
    assert normalize_stop_sequences(None) == []
    assert normalize_stop_sequences("END") == ["END"]
    assert normalize_stop_sequences(["a", "b", "a"]) == ["a", "b"]
    assert normalize_stop_sequences(("x",)) == ["x"]
    assert normalize_stop_sequences([]) == []


def test_stop_sequences_wrong_container() -> None:
    with pytest.raises(MessageError, match="stop_sequences must be a list of strings, got set"):
        normalize_stop_sequences({"a"})


def test_stop_sequence_not_a_string() -> None:
    with pytest.raises(MessageError, match=r"stop_sequences\[1\] must be a string, got int"):
        normalize_stop_sequences(["a", 1])


def test_empty_stop_sequence() -> None:
    with pytest.raises(MessageError, match=r"stop_sequences\[0\] is empty"):
        normalize_stop_sequences([""])


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("hello world", [], "hello world"),
        ("hello world", ["o"], "hell"),
        ("hello world", ["world", "lo"], "hel"),
        ("hello world", ["xyz"], "hello world"),
        ("Thought: x\nObservation: y", ["Observation:"], "Thought: x\n"),
        ("STOP at start", ["STOP"], ""),
        ("", ["a"], ""),
    ],
)
def test_trim_at_stop(text: str, stops: list[str], expected: str) -> None:
    assert trim_at_stop(text, stops) == expected


def _run_filter(pieces: list[str], stops: list[str]) -> list[str]:
    f = StopFilter(stops)
    out = [f.feed(p) for p in pieces]
    out.append(f.flush())
    return out


def test_stop_filter_without_stops_passes_pieces_through() -> None:
    assert _run_filter(["ab", "cd"], []) == ["ab", "cd", ""]


def test_stop_filter_holds_back_a_possible_stop_start() -> None:
    f = StopFilter(["<end>"])
    assert f.feed("hello <e") == "hello "  # "<e" could begin "<end>"
    assert f.feed("nd") == ""  # still "<end" could be the start
    assert f.feed("> trailing") == ""  # stop completed: nothing more
    assert f.stopped is True
    assert f.feed("more") == ""
    assert f.flush() == ""


def test_stop_filter_releases_a_false_alarm() -> None:
    f = StopFilter(["<end>"])
    assert f.feed("a <e") == "a "
    assert f.feed("x") == "<ex"
    assert f.flush() == ""


def test_stop_filter_flush_returns_the_held_tail() -> None:
    f = StopFilter(["STOP"])
    assert f.feed("abc ST") == "abc "
    assert f.flush() == "ST"


def test_stop_filter_stop_inside_one_piece() -> None:
    assert "".join(_run_filter(["one two STOP three"], ["STOP"])) == "one two "


def test_stop_filter_earliest_of_several_stops() -> None:
    assert "".join(_run_filter(["aa", "bXb", "Ycc"], ["Y", "X"])) == "aab"


def test_stop_filter_ignores_empty_pieces() -> None:
    f = StopFilter(["x"])
    assert f.feed("") == ""
    assert f.feed("ab") == "ab"


def test_str_is_the_reply_and_repr_leaves_out_the_raw_response() -> None:
    raw = {"id": "chatcmpl-1", "choices": ["a whole provider response"]}
    reply = ChatMessage(content="What a", raw=raw, token_usage=TokenUsage(3, 2))
    assert str(reply) == "What a"  # print(model(messages)) shows what the model said
    text = repr(reply)
    assert text.startswith("ChatMessage(role='assistant', content='What a'") and "token_usage=" in text
    assert "chatcmpl-1" not in text and "raw" not in text
    assert reply.raw is raw  # still there for whoever needs it


def test_str_of_a_tool_call_reply_summarises_the_calls() -> None:
    calls = [
        ToolCall(id="1", function=ToolCallFunction(name="add", arguments={"a": 2, "b": 3})),
        ToolCall(id="2", function=ToolCallFunction(name="final_answer", arguments="5")),
    ]
    assert (
        str(ChatMessage(content=None, tool_calls=calls))
        == 'tool calls: add({"a": 2, "b": 3}); final_answer(5)'
    )
    assert str(ChatMessage(content="", tool_calls=calls)).startswith("tool calls: add(")  # "" as some send
    assert str(ChatMessage(content="Adding.", tool_calls=calls)) == "Adding."
    assert str(ChatMessage()) == ""


# --------------------------------------------------------------------------- stop lists (hardening)


class _CountingStr(str):
    """A stop sequence that counts the comparisons made on it: de-duplication must not compare all pairs."""

    compares = 0

    def __eq__(self, other: object) -> bool:
        type(self).compares += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_stop_deduplication_is_linear_and_keeps_order() -> None:
    from modelfactory.messages import normalize_stop_sequences

    n = 3000
    stops = [_CountingStr(f"stop-{i}") for i in range(n)] + [_CountingStr("stop-0")]
    _CountingStr.compares = 0
    out = normalize_stop_sequences(stops)
    assert out == [f"stop-{i}" for i in range(n)]
    assert _CountingStr.compares < 5 * n  # pairwise de-duplication makes ~n*n/2 = 4.5M comparisons


def test_one_string_is_one_stop_and_the_limit_is_enforced() -> None:
    from modelfactory.errors import MessageError
    from modelfactory.messages import normalize_stop_sequences

    assert normalize_stop_sequences("END") == ["END"]
    assert normalize_stop_sequences(["a", "b", "a"], limit=2) == ["a", "b"]
    with pytest.raises(MessageError, match="more than 2 stop sequences"):
        normalize_stop_sequences(["a", "b", "c"], limit=2)
    with pytest.raises(MessageError, match=r"stop_sequences\[0\] must be a string"):
        normalize_stop_sequences([None])


def test_from_dict_gives_a_message_role() -> None:
    """smolagents' ChatMessage.from_dict gives a MessageRole: `.role.value` works (issue 23, item 5)."""
    message = ChatMessage.from_dict({"role": "user", "content": [{"type": "text", "text": "Hello!"}]})
    assert isinstance(message.role, MessageRole) and message.role.value == "user"
    assert message.role == "user"  # still equal to the plain string
    assert ChatMessage.from_dict({"role": MessageRole.ASSISTANT}).role is MessageRole.ASSISTANT
    assert ChatMessage.from_dict({"role": "tool", "content": "x"}).role == "tool"  # a wire role: kept
    assert ChatMessage.from_dict(ChatMessage(content="hi").to_dict()).to_dict()["role"] == "assistant"


def test_agglomerate_stream_deltas_merges_parallel_calls_by_index() -> None:
    from modelfactory.messages import ChatMessageStreamDelta, ToolCallStreamDelta, agglomerate_stream_deltas

    def piece(index: int, arguments: str, call_id: str | None = None, name: str = "") -> ToolCallStreamDelta:
        return ToolCallStreamDelta(
            index, call_id, "function" if call_id else None, ToolCallFunction(name, arguments)
        )

    deltas = [
        ChatMessageStreamDelta(content="Hi", tool_calls=[piece(0, "", "call_a", "add")]),
        ChatMessageStreamDelta(tool_calls=[piece(1, '{"a": 4', "call_b", "add")]),
        ChatMessageStreamDelta(tool_calls=[piece(0, '{"a": 2}')]),
        ChatMessageStreamDelta(tool_calls=[piece(1, "}")]),
        ChatMessageStreamDelta(token_usage=TokenUsage(3, 4)),
    ]
    reply = agglomerate_stream_deltas(deltas)
    assert reply.content == "Hi" and reply.token_usage == TokenUsage(3, 4)
    assert [(c.id, c.function.name, c.function.arguments) for c in reply.tool_calls or ()] == [
        ("call_a", "add", '{"a": 2}'),
        ("call_b", "add", '{"a": 4}'),
    ]
    with pytest.raises(MessageError, match="no index"):
        agglomerate_stream_deltas([ChatMessageStreamDelta(tool_calls=[ToolCallStreamDelta()])])
