"""CallableModel: a user's function by dotted path or object, called with only what it accepts."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from examples.custom_model import custom_model
from modelfactory.backends.callable import CallableModel, resolve_dotted
from modelfactory.errors import BackendError, ConfigError, UnsupportedFeatureError
from modelfactory.messages import ChatMessage, TokenUsage

MSGS = [{"role": "user", "content": "hello there"}]


def test_dotted_path_config() -> None:
    m = CallableModel(fn="examples.custom_model.custom_model")
    assert m.spec.fn is custom_model
    assert m.model_id == "callable"
    out = m.generate(MSGS)
    assert out.content == "Echo: hello there\nObservation: done. END"
    assert out.raw == out.content
    assert m.to_dict()["fn"] == "modelfactory.examples.custom_model.custom_model"  # where it lives


def test_colon_dotted_path() -> None:
    assert CallableModel(fn="examples.custom_model:custom_model").spec.fn is custom_model


def test_function_object_config() -> None:
    m = CallableModel(fn=custom_model, model_id="my-echo")
    assert m.generate([{"role": "user", "content": [{"type": "text", "text": "parts"}]}]).content.startswith(
        "Echo: parts\n"
    )
    assert m.model_id == "my-echo"


def test_stop_contract_with_the_example_function() -> None:
    m = CallableModel(fn="examples.custom_model.custom_model")
    assert m.generate(MSGS, stop_sequences=["Observation:"]).content == "Echo: hello there\n"
    assert m.generate(MSGS, stop_sequences=["END", "there"]).content == "Echo: hello "


def test_function_taking_only_messages_gets_only_messages() -> None:
    calls: list[tuple[Any, ...]] = []

    def only_messages(messages):  # type: ignore[no-untyped-def]
        calls.append((messages,))
        return "plain <cut> reply"

    m = CallableModel(fn=only_messages, temperature=0.5, max_tokens=3, generation_kwargs={"top_k": 2})
    out = m.generate(
        [{"role": "tool-response", "content": "r"}, *MSGS], stop_sequences=["<cut>"], temperature=0.9
    )
    assert calls == [([{"role": "user", "content": "r"}, {"role": "user", "content": "hello there"}],)]
    assert out.content == "plain "


def test_function_taking_kwargs_gets_everything() -> None:
    seen: dict[str, Any] = {}

    def takes_all(messages, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs, messages=messages)
        return "ok"

    tool = {"type": "function", "function": {"name": "f"}}
    m = CallableModel(
        fn=takes_all, temperature=0.5, seed=3, generation_kwargs={"top_k": 2}, kwargs={"user_opt": "u"}
    )
    m.generate(
        MSGS,
        stop_sequences=["X"],
        grammar="g+",
        response_format={"type": "json_object"},
        tools_to_call_from=[tool],
        temperature=0.9,
    )
    assert seen == {
        "messages": MSGS,
        "stop_sequences": ["X"],
        "grammar": "g+",
        "response_format": {"type": "json_object"},
        "tools_to_call_from": [tool],
        "temperature": 0.9,
        "seed": 3,
        "top_k": 2,
        "user_opt": "u",
    }


def test_named_parameters_get_only_their_values() -> None:
    seen: dict[str, Any] = {}

    def picky(messages, stop_sequences=None, temperature=None):  # type: ignore[no-untyped-def]
        seen.update(stop_sequences=stop_sequences, temperature=temperature)
        return "x"

    m = CallableModel(fn=picky, temperature=0.4, seed=9)
    m.generate(MSGS)
    assert seen == {"stop_sequences": None, "temperature": 0.4}
    m.generate(MSGS, stop_sequences="S", temperature=1.0)
    assert seen == {"stop_sequences": ["S"], "temperature": 1.0}


def test_grammar_to_a_function_without_a_grammar_parameter_is_refused() -> None:
    def no_grammar(messages):  # type: ignore[no-untyped-def]
        raise AssertionError("must not be called")

    with pytest.raises(ConfigError, match="does not take `grammar`") as info:
        CallableModel(fn=no_grammar).generate(MSGS, grammar="a+")
    assert info.value.problems[0].key == "fn"


def test_example_function_accepts_grammar() -> None:
    assert CallableModel(fn=custom_model).generate(MSGS, grammar="a+").content.startswith("Echo: hello there")


def test_returning_an_object_with_content() -> None:
    @dataclass
    class Reply:
        content: str
        token_usage: TokenUsage

    reply = Reply("object reply STOP tail", TokenUsage(2, 3))
    m = CallableModel(fn=lambda messages: reply)
    out = m.generate(MSGS, stop_sequences=["STOP"])
    assert isinstance(out, ChatMessage)
    assert out.content == "object reply "
    assert out.token_usage == TokenUsage(2, 3)
    assert out.raw is reply


def test_returning_a_chat_message_or_dict() -> None:
    msg = ChatMessage(content="direct", token_usage=TokenUsage(1, 1))
    assert CallableModel(fn=lambda messages: msg).generate(MSGS) is msg
    out = CallableModel(fn=lambda messages: {"content": "from dict"}).generate(MSGS)
    assert out.content == "from dict"


@pytest.mark.parametrize("bad", [42, None, ["a"], {"text": "no content key"}])
def test_bad_return_type_is_a_backend_error(bad: Any) -> None:
    def fn(messages):  # type: ignore[no-untyped-def]
        return bad

    with pytest.raises(
        BackendError, match=r"returned \w+; return a string or an object with \.content"
    ) as info:
        CallableModel(fn=fn).generate(MSGS)
    assert info.value.backend == "CallableModel"
    assert f"{__name__}." in str(info.value)  # names the function


def test_exception_in_the_function_is_a_backend_error() -> None:
    def boom(messages):  # type: ignore[no-untyped-def]
        raise ZeroDivisionError("division by zero in user code")

    with pytest.raises(BackendError, match="ZeroDivisionError: division by zero in user code") as info:
        CallableModel(fn=boom).generate(MSGS)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("examples.custom_model.does_not_exist", "has no attribute 'does_not_exist'"),
        ("examples.nope.custom_model", "has no attribute 'nope'"),
        ("no_such_package_xyz.fn", "no importable module in 'no_such_package_xyz.fn'"),
        ("examples.custom_model.PREFIX", "is a str, not a callable"),
        ("nodots", "no importable module"),
    ],
)
def test_non_importable_path_is_a_config_error(path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        CallableModel(fn=path)
    (problem,) = info.value.problems
    assert problem.key == "fn"
    assert reason in problem.problem
    assert "dotted path" in problem.fix


def test_fn_of_the_wrong_type() -> None:
    with pytest.raises(ConfigError) as info:
        CallableModel(fn=12)
    assert info.value.problems[0].key == "fn"
    assert "must be a dotted path string, got int" in info.value.problems[0].problem


def test_missing_fn() -> None:
    with pytest.raises(ConfigError) as info:
        CallableModel()
    assert [(p.key, p.problem) for p in info.value.problems] == [("fn", "required but not set")]


@pytest.fixture
def tmp_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("mfpkg")]:
        del sys.modules[name]


def test_import_error_inside_the_module_is_reported(tmp_package: Path) -> None:
    pkg = tmp_package / "mfpkg_dep"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("import zz_missing_dependency\n\ndef fn(messages):\n    return 'x'\n")
    with pytest.raises(ConfigError) as info:
        CallableModel(fn="mfpkg_dep.mod.fn")
    assert "No module named 'zz_missing_dependency'" in info.value.problems[0].problem


def test_missing_dependency_with_a_prefix_name_is_reported(tmp_package: Path) -> None:
    pkg = tmp_package / "mfpkg_prefix"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    # the module needs `mfpkg` (missing), whose name is a string prefix of `mfpkg_prefix.mod`
    (pkg / "mod.py").write_text("import mfpkg\n\ndef fn(messages):\n    return 'x'\n")
    with pytest.raises(ConfigError) as info:
        CallableModel(fn="mfpkg_prefix.mod.fn")
    assert "No module named 'mfpkg'" in info.value.problems[0].problem


def test_resolve_dotted_nested_attribute() -> None:
    assert resolve_dotted("os.path.join") is __import__("os").path.join
    assert resolve_dotted("examples.custom_model.custom_model") is custom_model


def test_streaming_is_not_supported() -> None:
    with pytest.raises(UnsupportedFeatureError, match="CallableModel does not support streaming"):
        list(CallableModel(fn=custom_model).generate_stream(MSGS))
