"""The bad-input corpus: every malformed config, message or file gets a clear modelfactory error.

Never a bare ``KeyError`` / ``AttributeError`` / ``TypeError`` from inside an SDK: configs fail with a
``ConfigError`` (key, problem, fix), calls with a ``MessageError`` (before anything is sent) or a
``BackendError`` (model, status, provider message). Hypothesis fuzzes configs and messages to check that
nothing outside ``modelfactory.errors`` ever escapes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from modelfactory import build_model, validate_config
from modelfactory.backends.callable import CallableModel
from modelfactory.backends.hf_inference import HfApiModel
from modelfactory.backends.openai import OpenAIServerModel
from modelfactory.errors import BackendError, ConfigError, MessageError, ModelFactoryError
from tests.servers.recording import RecordingServer

KEY = "sk-bad-inputs-KEY-0123456789"
MSGS = [{"role": "user", "content": "hi"}]
ECHO = "examples.custom_model.custom_model"
ONE_TRY = {"max_attempts": 1}


@pytest.fixture(scope="module")
def server() -> Iterator[RecordingServer]:
    with RecordingServer() as srv:
        yield srv


def openai_model(srv: RecordingServer, **kw: Any) -> OpenAIServerModel:
    kw.setdefault("retry", ONE_TRY)
    return OpenAIServerModel(model_id="m", api_base=f"{srv.url}/v1", api_key=KEY, **kw)


def keys(exc: pytest.ExceptionInfo[ConfigError]) -> set[str]:
    return {p.key for p in exc.value.problems}


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    ("target", "kwargs", "typo", "meant"),
    [
        ("OpenAIServerModel", {"model_id": "m", "api_base": "http://x/v1"}, "temprature", "temperature"),
        ("AzureOpenAIServerModel", {}, "api_verison", "api_version"),
        ("HfApiModel", {}, "base_ulr", "base_url"),
        ("LiteLLMModel", {"model_id": "openai/x"}, "api_bse", "api_base"),
        ("CallableModel", {"fn": ECHO}, "kwarg", "kwargs"),
        ("TransformersModel", {"model_id": "builtin:tiny-llama"}, "max_new_token", "max_new_tokens"),
    ],
)
def test_unknown_kwarg_gets_did_you_mean(target: str, kwargs: dict[str, Any], typo: str, meant: str) -> None:
    cfg = {"_target_": target, **kwargs, typo: 1}
    problems = validate_config(cfg)
    bad = [p for p in problems if p.key == typo]
    assert bad and f"did you mean '{meant}'?" in bad[0].problem
    with pytest.raises(ConfigError, match=f"did you mean '{meant}'"):
        build_model(cfg)


def test_wrong_types_are_all_reported_with_their_keys() -> None:
    with pytest.raises(ConfigError) as info:
        build_model(
            {
                "_target_": "OpenAIServerModel",
                "model_id": ["not", "a", "string"],
                "api_base": 42,
                "temperature": "hot",
                "max_tokens": "ten",
                "supports_stop": "maybe",
                "generation_kwargs": [1, 2],
                "retry": {"max_attempts": "many", "initial_wait": -1},
                "requests_per_minute": "fast",
                "timeout": 0,
            }
        )
    assert keys(info) == {
        "model_id",
        "api_base",
        "temperature",
        "max_tokens",
        "supports_stop",
        "generation_kwargs",
        "retry.max_attempts",
        "retry.initial_wait",
        "requests_per_minute",
        "timeout",
    }


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ("modelfactory.OpenAIServerModle", "did you mean 'OpenAIServerModel'?"),
        ("HfApiModle", "did you mean 'HfApiModel'?"),
        ("no_such_package.Model", "cannot import 'no_such_package.Model'"),
        ("", "_target_: missing"),
        (None, "_target_: missing"),
        (42, "_target_: missing"),
    ],
)
def test_unknown_target(target: Any, needle: str) -> None:
    cfg = {"_target_": target, "model_id": "m"} if target is not None else {"model_id": "m"}
    with pytest.raises(ConfigError) as info:
        build_model(cfg)
    assert needle in str(info.value)
    assert "use one of" in str(info.value) or "set _target_" in str(info.value)


def test_target_that_is_not_a_model() -> None:
    with pytest.raises(ConfigError, match="did not build a callable model"):
        build_model({"_target_": "collections.OrderedDict"})


def test_missing_env_vars_are_named() -> None:
    with pytest.raises(ConfigError) as info:
        build_model({"_target_": "AzureOpenAIServerModel"})
    text = str(info.value)
    for var in ("AZURE_OPENAI_MODEL", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "OPENAI_API_VERSION"):
        assert f"env var {var} is not set" in text
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build_model({"_target_": "OpenAIServerModel", "model_id": "gpt-4o"})


def test_unresolvable_env_interpolation_names_the_variable() -> None:
    cfg = OmegaConf.create(
        {
            "_target_": "OpenAIServerModel",
            "model_id": "m",
            "api_base": "http://127.0.0.1:1/v1",
            "api_key": "${oc.env:MF_SURELY_UNSET_VAR}",
        }
    )
    (problem,) = validate_config(cfg)
    assert problem.key == "api_key"
    assert "MF_SURELY_UNSET_VAR" in problem.problem
    assert problem.fix == "export MF_SURELY_UNSET_VAR=... before running"
    with pytest.raises(ConfigError, match="MF_SURELY_UNSET_VAR"):
        build_model(cfg)


def test_missing_provider_keys_are_reported_by_check_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)  # no saved `hf auth login` either
    cfg = {"_target_": "LiteLLMModel", "model_id": "anthropic/claude-3-5-sonnet-latest"}
    assert validate_config(cfg) == []  # litellm may still find a key at call time
    (problem,) = validate_config(cfg, environment=True)
    assert problem.key == "api_key"
    assert "ANTHROPIC_API_KEY is not set" in problem.problem
    assert problem.fix.startswith("export ANTHROPIC_API_KEY=...")
    (problem,) = validate_config({"_target_": "HfApiModel"}, environment=True)
    assert "HF_TOKEN is not set" in problem.problem
    assert (
        validate_config({"_target_": "HfApiModel", "base_url": "http://127.0.0.1:1"}, environment=True) == []
    )


def test_secret_of_the_wrong_type_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        build_model({"_target_": "LiteLLMModel", "model_id": "x", "api_key": ["sk-live-SECRET-0123456789"]})
    assert "sk-live-SECRET" not in str(info.value)


# --------------------------------------------------------------------------- messages and call arguments


BAD_MESSAGES: list[tuple[Any, str]] = [
    ([], "messages is empty"),
    ((m for m in []), "messages is empty"),
    ("just a string", "must be a list"),
    ({"role": "user", "content": "hi"}, "must be a list"),
    (None, "must be a list"),
    (42, "must be a list"),
    ([{"role": "wizard", "content": "hi"}], "unknown role 'wizard'"),
    ([{"role": 7, "content": "hi"}], "unknown role 7"),
    ([{"content": "hi"}], "missing 'role'"),
    (["hi"], "missing 'role'"),
    ([{"role": "user"}], "missing 'content'"),
    ([{"role": "user", "content": 42}], "'content' must be a string or a list of parts"),
    ([{"role": "user", "content": b"bytes"}], "'content' must be a string or a list of parts"),
    ([{"role": "user", "content": [42]}], "a content part must be a dict"),
    ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "needs a string 'text'"),
    ([{"role": "user", "content": [{"type": "text"}]}], "needs a string 'text'"),
    ([{"role": "user", "content": [{"type": "audio", "data": "x"}]}], "unknown content part type 'audio'"),
    ([{"role": "user", "content": [{"type": "image"}]}], "an image part needs a URL"),
]


@pytest.mark.parametrize(("messages", "needle"), BAD_MESSAGES)
def test_bad_messages_fail_before_anything_is_sent(
    server: RecordingServer, messages: Any, needle: str
) -> None:
    before = len(server.requests)
    for model in (CallableModel(fn=ECHO), openai_model(server)):
        with pytest.raises(MessageError, match=re.escape(needle)):
            model(messages)
    with pytest.raises(MessageError):
        list(openai_model(server).generate_stream(messages))
    assert len(server.requests) == before


@pytest.mark.parametrize(
    ("stop", "needle"),
    [
        (5, "stop_sequences must be a list of strings, got int"),
        ({"END"}, "got set"),
        ([1, 2], r"stop_sequences\[0\] must be a string"),
        (["ok", None], r"stop_sequences\[1\] must be a string"),
        ([""], "is empty"),
        (b"END", "got bytes"),
    ],
)
def test_stop_sequences_of_the_wrong_type(server: RecordingServer, stop: Any, needle: str) -> None:
    before = len(server.requests)
    for model in (CallableModel(fn=ECHO), openai_model(server)):
        with pytest.raises(MessageError, match=needle):
            model(MSGS, stop_sequences=stop)
    assert len(server.requests) == before


def test_unsupported_call_features_are_clear(server: RecordingServer) -> None:
    with pytest.raises(ModelFactoryError, match="grammar"):
        openai_model(server)(MSGS, grammar="a+")
    with pytest.raises(ModelFactoryError, match="tool"):
        openai_model(server)(MSGS, tools_to_call_from=[object()])


def test_a_1mb_prompt_goes_through_intact(server: RecordingServer) -> None:
    prompt = "x" * (1 << 20)
    reply = openai_model(server)([{"role": "user", "content": prompt}])
    assert reply.content == server.reply
    assert server.last.body["messages"][0]["content"] == prompt
    assert CallableModel(fn=ECHO)([{"role": "user", "content": prompt}]).content.startswith("Echo: xxx")


def test_a_1mb_prompt_rejected_by_the_provider_is_a_short_backend_error(server: RecordingServer) -> None:
    prompt = "y" * (1 << 20)
    echoed = f"This model's maximum context length is 128000 tokens. Your messages: {prompt}"
    server.enqueue(
        400,
        {"error": {"message": echoed, "type": "invalid_request_error", "code": "context_length_exceeded"}},
    )
    with pytest.raises(BackendError) as info:
        openai_model(server, retry={"max_attempts": 3})([{"role": "user", "content": prompt}])
    err = info.value
    assert (err.status, err.retryable, err.attempts) == (400, False, 1)
    assert "maximum context length" in str(err)
    assert len(str(err)) < 5000  # the echoed megabyte is cut


def test_unserialisable_message_fields_are_a_backend_error_not_a_type_error(server: RecordingServer) -> None:
    messages = [{"role": "user", "content": "hi", "name": object()}]
    with pytest.raises(ModelFactoryError):
        openai_model(server)(messages)


# --------------------------------------------------------------------------- `modelfactory check`

REPO = Path(__file__).resolve().parents[1]
PLACEHOLDERS = {
    "OPENAI_API_KEY": "placeholder",
    "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com",
    "AZURE_OPENAI_API_KEY": "placeholder",
    "OPENAI_API_VERSION": "2024-10-21",
    "AZURE_OPENAI_MODEL": "gpt-4o",
    "HF_TOKEN": "placeholder",
    "ANTHROPIC_API_KEY": "placeholder",
}


def test_check_reports_missing_env_vars_as_such(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelfactory.cli import main

    monkeypatch.chdir(REPO)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)  # no saved `hf auth login` either
    assert main(["check", "model=litellm_claude"]) == 1
    out = capsys.readouterr().out
    assert "conf/model/litellm_claude.yaml: api_key: no key for anthropic (env var ANTHROPIC_API_KEY" in out
    assert "fix: export ANTHROPIC_API_KEY=..." in out
    assert main(["check", "model=hf_api"]) == 1
    assert "env var HF_TOKEN is not set" in capsys.readouterr().out
    assert main(["check", "model=no_such_config"]) == 1
    assert "no_such_config" in capsys.readouterr().out


def test_check_makes_no_network_call_and_loads_no_weights() -> None:
    import os
    import subprocess
    import sys

    code = (
        "import socket, sys\n"
        "def boom(*a, **k): raise AssertionError('network call during check')\n"
        "socket.socket.connect = boom\n"
        "socket.create_connection = boom\n"
        "from modelfactory.cli import main\n"
        "rc = main(['check'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'litellm', 'safetensors') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, **PLACEHOLDERS}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 problem(s) in" in out.stdout


# --------------------------------------------------------------------------- dataset files (runner)


def test_dataset_file_that_does_not_exist(tmp_path: Path) -> None:
    from modelfactory.job.items import load_dataset

    with pytest.raises(ConfigError, match="not found") as info:
        load_dataset(tmp_path / "nope.jsonl")
    assert str(tmp_path / "nope.jsonl") in str(info.value)


def test_dataset_file_with_invalid_utf8(tmp_path: Path) -> None:
    from modelfactory.job.items import load_dataset

    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"id": "a", "prompt": "fine"}\n{"id": "b", "prompt": "caf\xe9 \xff"}\n')
    with pytest.raises(ConfigError, match="UTF-8") as info:
        load_dataset(path)
    assert "line 2" in str(info.value)


# --------------------------------------------------------------------------- fuzzing

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.binary(max_size=6)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_FUZZ_TARGETS = [
    "OpenAIServerModel",
    "AzureOpenAIServerModel",
    "HfApiModel",
    "LiteLLMModel",
    "CallableModel",
    "TransformersModel",
]


def _field_names(target: str) -> list[str]:
    from modelfactory.factory import locate_target

    cls, _ = locate_target(target)
    return sorted(cls.Spec.model_fields)


_FIELDS = {t: _field_names(t) for t in _FUZZ_TARGETS}


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    target = draw(st.sampled_from(_FUZZ_TARGETS))
    names = st.sampled_from(_FIELDS[target]) | st.text(min_size=1, max_size=10)
    cfg: dict[str, Any] = {"_target_": target}
    cfg.update(draw(st.dictionaries(names, _values, max_size=6)))
    if "fn" in cfg or target == "CallableModel":
        # never import whatever module a random string names
        cfg["fn"] = draw(
            st.sampled_from([ECHO, "no.such.module.fn", "examples.custom_model.PREFIX", 5, None])
        )
    if isinstance(cfg.get("retry"), dict) or draw(st.booleans()):
        cfg["retry"] = draw(
            st.dictionaries(
                st.sampled_from(["max_attempts", "initial_wait", "max_wait", "jitter", "x"]), _scalars
            )
            | _scalars
        )
    return cfg


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(cfg=configs())
@example(cfg={"_target_": "OpenAIServerModel", "self": None})  # was a TypeError from Model.__init__
@example(cfg={"_target_": "TransformersModel", "self": 1})
@example(cfg={"_target_": "FallbackModel", "self": 1})
def test_fuzzed_configs_raise_only_config_errors(cfg: dict[str, Any]) -> None:
    problems = validate_config(cfg, environment=True)  # never raises
    assert isinstance(problems, list)
    try:
        model = build_model(cfg)
    except ConfigError as exc:
        assert exc.problems
        return
    assert not validate_config(cfg)  # what builds, validates
    model.to_dict()
    repr(model)


_roles = (
    st.sampled_from(["user", "assistant", "system", "tool-call", "tool-response", "tool", "bogus"]) | _scalars
)
_parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20) | _scalars}),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["image", "image_url", "audio", "text"]), "image": _values}
    ),
    _values,
)
_content = st.text(max_size=40) | st.lists(_parts, max_size=3) | _values
_message = st.fixed_dictionaries(
    {"role": _roles},
    optional={"content": _content, "name": _values, "tool_calls": _values, "tool_call_id": _values},
)
_messages = st.lists(_message, max_size=3) | _values
_stops = st.none() | st.text(max_size=3) | st.lists(st.text(max_size=3) | _scalars, max_size=3) | _scalars


# What a fuzzed input must give, decided here from the documented rules (not by modelfactory's own code):
# None when it is valid (then the call must succeed), else the error class and the key it must name. An
# implementation that rejected everything, or the wrong thing, fails these as well as one that crashes.
_ROLES = {"system", "user", "assistant", "tool", "developer", "tool-call", "tool-response"}


def _part_problem(part: Any) -> bool:
    if isinstance(part, str):
        return False
    if not isinstance(part, dict):
        return True
    kind = part.get("type")
    if kind == "text":
        return not isinstance(part.get("text"), str)
    if kind == "image":
        return not (isinstance(part.get("image"), str) and part["image"])
    if kind == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        return not (isinstance(url, str) and url)
    return True  # an unknown part type


def _message_problem(messages: Any) -> str | None:
    """The key a MessageError about ``messages`` must name (``messages[i]`` / ``messages[i].content[j]``),
    or None when they are valid."""
    if not isinstance(messages, (list, tuple)) or not messages:
        return "messages"
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        role = msg.get("role") if isinstance(msg, dict) else None
        if not isinstance(role, str) or role not in _ROLES:
            return where
        content = msg.get("content")
        if content is None:
            if not msg.get("tool_calls"):  # content may be absent only beside tool calls
                return where
        elif isinstance(content, (list, tuple)):
            for j, part in enumerate(content):
                if _part_problem(part):
                    return f"{where}.content[{j}]"
        elif not isinstance(content, str):
            return where
    return None


def _stop_problem(stop: Any) -> str | None:
    """``stop_sequences``: None, one non-empty string, or a list of them; else the key at fault."""
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)):
        return "stop_sequences"
    for i, s in enumerate(stops):
        if not isinstance(s, str) or not s:
            return f"stop_sequences[{i}]"
    return None


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _expect(fn: Any, problem: tuple[type[ModelFactoryError], str | list[str]] | None) -> Any:
    """Call ``fn``: it must succeed when ``problem`` is None, else raise exactly that class naming the key
    (one of the keys, for a list: several things wrong, either may be reported first)."""
    if problem is None:
        return fn()
    cls, keys = problem
    with pytest.raises(ModelFactoryError) as info:
        fn()
    assert type(info.value) is cls, (cls, info.value)
    text = str(info.value)
    keys = [keys] if isinstance(keys, str) else keys
    if cls is MessageError:  # the message starts with the key: "messages[1].content[0]: ..."
        assert any(re.match(re.escape(k) + "[ :]", text) for k in keys), (keys, text)
    else:
        assert any(k in text for k in keys), (keys, text)
    return None


def _generation_problem(params: dict[str, Any]) -> tuple[type[ModelFactoryError], list[str]] | None:
    """The documented generation rules (README, call contract): ``temperature`` a finite number from 0 to 2,
    ``seed`` an integer in 64 bits (a bool is neither); checked before the messages, as a ConfigError."""

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    keys = []
    t = params.get("temperature")
    if t is not None and not (number(t) and math.isfinite(t) and 0 <= t <= 2):
        keys.append("temperature")
    seed = params.get("seed")
    if seed is not None and not (
        isinstance(seed, int) and not isinstance(seed, bool) and -(2**63) <= seed < 2**64
    ):
        keys.append("seed")
    return (ConfigError, keys) if keys else None


def _call_problem(messages: Any, stop: Any = None) -> tuple[type[ModelFactoryError], list[str]] | None:
    keys = [k for k in (_message_problem(messages), _stop_problem(stop)) if k is not None]
    return (MessageError, keys) if keys else None


@FUZZ
@given(messages=_messages, stop=_stops, temperature=st.none() | st.floats(0, 2) | _scalars)
def test_fuzzed_messages_on_a_callable_model(messages: Any, stop: Any, temperature: Any) -> None:
    model = CallableModel(fn=ECHO, retry=ONE_TRY)
    reply = _expect(lambda: model(messages, stop_sequences=stop), _call_problem(messages, stop))
    assert reply is None or reply.content.startswith("Echo: ")
    problem = _generation_problem({"temperature": temperature}) or _call_problem(messages)
    reply = _expect(lambda: model(messages, temperature=temperature), problem)  # to the fn
    assert reply is None or reply.content.startswith("Echo: ")


@FUZZ
@given(
    messages=_messages,
    stop=_stops,
    extra=st.dictionaries(st.sampled_from(["temperature", "top_k", "seed"]), _values),
)
def test_fuzzed_messages_on_the_wire(
    server: RecordingServer, messages: Any, stop: Any, extra: dict[str, Any]
) -> None:
    model = openai_model(server)
    problem = _generation_problem(extra) or _call_problem(messages, stop)
    if problem is None and not _json_ok([messages, extra]):  # NaN, bytes, ...: refused before sending
        problem = (BackendError, ["not JSON compliant", "not JSON serializable"])
    reply = _expect(lambda: model(messages, stop_sequences=stop, **extra), problem)
    assert reply is None or server.reply.startswith(reply.content)  # cut at a stop, if one was in it
    problem = _call_problem(messages)
    if problem is None and not _json_ok(messages):
        problem = (BackendError, ["not JSON compliant", "not JSON serializable"])
    _expect(lambda: "".join(d.content or "" for d in model.generate_stream(messages)), problem)


@FUZZ
@given(messages=_messages)
def test_fuzzed_messages_through_huggingface_hub(server: RecordingServer, messages: Any) -> None:
    import huggingface_hub.constants

    offline, huggingface_hub.constants.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE, False
    try:
        model = HfApiModel(model_id="m", base_url=server.url, retry=ONE_TRY)
        problem = _call_problem(messages)
        if problem is None and not _json_ok(messages):
            problem = (BackendError, ["not JSON compliant", "not JSON serializable"])
        reply = _expect(lambda: model(messages), problem)
        assert reply is None or reply.content == server.reply
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = offline


def test_nan_and_infinity_fail_before_anything_is_sent(server: RecordingServer) -> None:
    before = len(server.requests)
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ConfigError, match="invalid generation parameters") as info:
            openai_model(server)(MSGS, temperature=value)
        assert [p.key for p in info.value.problems] == ["temperature"]
    assert len(server.requests) == before  # refused on our side: no invalid JSON went out


# --------------------------------------------------------------------------- fuzzing VALID input: it must work
# The fuzzers above accept any modelfactory error, so on their own they could not tell a valid input that is
# wrongly rejected from an invalid one. These generate only valid input and require the exact result.

_model_ids = st.from_regex(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}(/[A-Za-z0-9][A-Za-z0-9._-]{0,20})?", fullmatch=True
)
_valid_retry = st.builds(
    lambda attempts, wait, extra, jitter: {
        "max_attempts": attempts,
        "initial_wait": wait,
        "max_wait": wait + extra,
        "jitter": jitter,
    },
    st.integers(1, 6),
    st.floats(0, 5),
    st.floats(0, 60),
    st.floats(0, 1),
)
_generation = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.floats(0, 2),
        "max_tokens": st.integers(1, 100_000),
        "top_p": st.floats(0, 1, exclude_min=True),
        "seed": st.integers(-(2**31), 2**31),
        "retry": _valid_retry,
        "requests_per_minute": st.floats(0.01, 1e6),
    },
)
_REQUIRED = {  # what each backend needs besides a model id; no secret comes from the environment
    "OpenAIServerModel": {"api_base": "http://127.0.0.1:1/v1", "api_key": KEY},
    "AzureOpenAIServerModel": {
        "azure_endpoint": "https://example.openai.azure.com",
        "api_key": KEY,
        "api_version": "2024-10-21",
    },
    "HfApiModel": {"token": KEY},
    "LiteLLMModel": {"api_key": KEY},
    "CallableModel": {"fn": ECHO},
    "TransformersModel": {},
}


@st.composite
def valid_configs(draw: st.DrawFn) -> dict[str, Any]:
    target = draw(st.sampled_from(_FUZZ_TARGETS))
    model_id = draw(_model_ids)
    if target == "LiteLLMModel":
        model_id = f"openai/{model_id}"
    if target == "TransformersModel":
        model_id = "builtin:tiny-llama"
    cfg = {"_target_": target, "model_id": model_id, **_REQUIRED[target], **draw(_generation)}
    if target == "CallableModel" and draw(st.booleans()):
        del cfg["model_id"]  # optional there: derived from the function's name
    return cfg


@FUZZ
@given(cfg=valid_configs())
def test_fuzzed_valid_configs_build(cfg: dict[str, Any]) -> None:
    assert validate_config(cfg) == []
    model = build_model(cfg)  # must not raise
    saved = model.to_dict()
    for key in ("temperature", "max_tokens", "top_p", "seed", "requests_per_minute"):
        if key in cfg:
            assert getattr(model.spec, key) == cfg[key] == saved[key]
    if "retry" in cfg:
        assert model.spec.retry.model_dump() == cfg["retry"]
    assert build_model(saved).to_dict() == saved  # what was saved builds the same model


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)
_valid_content = _text | st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": _text}), min_size=1, max_size=3
)
_valid_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": _valid_content}
    ),
    max_size=3,
).map(lambda ms: [*ms, {"role": "user", "content": ms[-1]["content"] if ms else "hi"}])
_valid_stops = st.lists(_text, min_size=1, max_size=4, unique=True)


def _plain(content: Any) -> str:
    return content if isinstance(content, str) else "\n".join(part["text"] for part in content)


def _cut(text: str, stops: list[str]) -> str:
    found = [text.find(s) for s in stops if s in text]
    return text[: min(found)] if found else text


@FUZZ
@given(messages=_valid_messages, stops=_valid_stops, temperature=st.floats(0, 2))
def test_fuzzed_valid_messages_on_a_callable_model(
    messages: Any, stops: list[str], temperature: float
) -> None:
    from examples.custom_model import PREFIX, TAIL

    model = CallableModel(fn=ECHO, retry=ONE_TRY)
    expected = PREFIX + _plain(messages[-1]["content"]) + TAIL
    assert model(messages).content == expected
    assert model(messages, stop_sequences=stops, temperature=temperature).content == _cut(expected, stops)


@FUZZ
@given(messages=_valid_messages, stops=_valid_stops, temperature=st.floats(0, 2))
def test_fuzzed_valid_messages_on_the_wire(
    server: RecordingServer, messages: Any, stops: list[str], temperature: float
) -> None:
    model = openai_model(server)
    reply = model(messages, stop_sequences=stops, temperature=temperature)
    assert reply.content == _cut(server.reply, stops)
    body = server.last.body
    assert body["messages"] == [{"role": m["role"], "content": _plain(m["content"])} for m in messages]
    assert (body["stop"], body["temperature"]) == (stops, temperature)
    streamed = "".join(d.content or "" for d in model.generate_stream(messages, stop_sequences=stops))
    assert streamed == reply.content


@FUZZ
@given(messages=_valid_messages)
def test_fuzzed_valid_messages_through_huggingface_hub(server: RecordingServer, messages: Any) -> None:
    import huggingface_hub.constants

    offline, huggingface_hub.constants.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE, False
    try:
        model = HfApiModel(model_id="m", base_url=server.url, retry=ONE_TRY)
        assert model(messages).content == server.reply
        assert [m["role"] for m in server.last.body["messages"]] == [m["role"] for m in messages]
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = offline
