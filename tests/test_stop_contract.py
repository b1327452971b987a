"""Property tests of the stop contract: the returned text ends *before* the earliest stop, always.

Checked at three levels: ``trim_at_stop`` against a brute-force oracle, ``StopFilter`` fed any chunking
of the text, and end to end through real backends (OpenAI, Azure, HF InferenceClient and LiteLLM against
the recording server, and a ``CallableModel``), both blocking and streamed, with the provider taking ``stop`` or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modelfactory.backends.azure import AzureOpenAIServerModel
from modelfactory.backends.callable import CallableModel
from modelfactory.backends.openai import OpenAIServerModel
from modelfactory.messages import StopFilter, normalize_stop_sequences, trim_at_stop
from tests.servers.recording import RecordingServer

# A small alphabet makes stops occur often (and overlap, and straddle chunk borders).
ALPHABET = "ab<>/ \né"
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
E2E_SETTINGS = settings(SETTINGS, max_examples=30)


@st.composite
def text_and_stops(draw: st.DrawFn, max_size: int = 40, max_stops: int = 4) -> tuple[str, list[str]]:
    text = draw(st.one_of(st.text(alphabet=ALPHABET, max_size=max_size), st.text(max_size=max_size)))
    stops: list[str] = []
    for _ in range(draw(st.integers(0, max_stops))):
        if text and draw(st.booleans()):  # a piece of the text itself: it will occur
            i = draw(st.integers(0, len(text) - 1))
            j = draw(st.integers(i + 1, min(len(text), i + 5)))
            stops.append(text[i:j])
        else:
            stops.append(draw(st.text(alphabet=ALPHABET, min_size=1, max_size=4)))
    return text, stops


@st.composite
def chunked(draw: st.DrawFn, max_stops: int = 4) -> tuple[str, list[str], list[str]]:
    text, stops = draw(text_and_stops(max_stops=max_stops))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))  # repeats give empty pieces
    bounds = [0, *cuts, len(text)]
    return text, stops, [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def oracle(text: str, stops: list[str]) -> str:
    """Brute force: the text up to the first position where any stop begins."""
    for i in range(len(text) + 1):
        if any(text.startswith(s, i) for s in stops):
            return text[:i]
    return text


def holdback(seen: str, stops: list[str]) -> int:
    """Length of the longest suffix of ``seen`` that is a proper prefix of some stop."""
    return max(
        (k for k in range(1, len(seen) + 1) for s in stops if k < len(s) and s.startswith(seen[-k:])),
        default=0,
    )


def assert_contract(out: str | None, text: str, stops: list[str]) -> None:
    assert out is not None
    for s in stops:
        assert s not in out
    assert text.startswith(out)
    assert out == oracle(text, stops)


# --------------------------------------------------------------------------- pure functions


@SETTINGS
@given(text_and_stops())
def test_trim_at_stop_cuts_at_the_earliest_stop(case: tuple[str, list[str]]) -> None:
    text, stops = case
    out = trim_at_stop(text, stops)
    assert_contract(out, text, stops)
    if len(out) < len(text):  # it was cut: exactly where a stop begins
        assert any(text.startswith(s, len(out)) for s in stops)
    else:
        assert not any(s in text for s in stops)


@SETTINGS
@given(text_and_stops())
def test_trim_at_stop_is_idempotent(case: tuple[str, list[str]]) -> None:
    text, stops = case
    once = trim_at_stop(text, stops)
    assert trim_at_stop(once, stops) == once


def run_filter(text: str, stops: list[str], pieces: list[str]) -> None:
    assert "".join(pieces) == text
    f = StopFilter(normalize_stop_sequences(stops))
    emitted = ""
    seen = ""
    for piece in pieces:
        emitted += f.feed(piece)
        seen += piece
        for s in stops:
            assert s not in emitted
        if f.stopped:
            assert emitted == trim_at_stop(seen, stops)
        else:
            # it holds back only what could still become a stop, nothing more
            assert emitted == seen[: len(seen) - holdback(seen, stops)]
    emitted += f.flush()
    assert emitted == trim_at_stop(text, stops)
    assert f.flush() == ""


@SETTINGS
@given(chunked(max_stops=1))
def test_stop_filter_with_one_stop_emits_exactly_the_trimmed_text(
    case: tuple[str, list[str], list[str]],
) -> None:
    run_filter(*case)


@SETTINGS
@example(("><<<", ["<", "><<<"], ["><<", "<"]))
@example(("Observation: x", ["serv", "Observation:"], ["Observ", "ation: x"]))
@given(chunked())
def test_stop_filter_on_any_chunking_emits_exactly_the_trimmed_text(
    case: tuple[str, list[str], list[str]],
) -> None:
    run_filter(*case)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def server() -> Iterator[RecordingServer]:
    with RecordingServer() as s:
        yield s


def _streamed(model: Any, messages: list[dict[str, Any]], stops: list[str]) -> str:
    out = ""
    for delta in model.generate_stream(messages, stop_sequences=stops):
        for s in stops:
            assert s not in (delta.content or "")
        out += delta.content or ""
    return out


MSGS = [{"role": "user", "content": "go"}]


@pytest.mark.parametrize("supports_stop", [True, False])
def test_openai_backend_keeps_the_stop_contract(server: RecordingServer, supports_stop: bool) -> None:
    model = OpenAIServerModel(
        model_id="prop-model", api_base=f"{server.url}/v1", max_retries=0, supports_stop=supports_stop
    )

    @E2E_SETTINGS
    @given(text_and_stops())
    def check(case: tuple[str, list[str]]) -> None:
        text, stops = case
        server.reply = text
        out = model.generate(MSGS, stop_sequences=stops)
        assert_contract(out.content, text, stops)
        body = server.last.body
        if supports_stop and stops:
            assert body["stop"] == normalize_stop_sequences(stops)
        else:
            assert "stop" not in body
        assert_contract(_streamed(model, MSGS, stops), text, stops)
        assert server.last.body["stream"] is True
        assert ("stop" in server.last.body) is bool(supports_stop and stops)

    check()


def test_openai_stream_with_several_stops_keeps_the_stop_contract(server: RecordingServer) -> None:
    model = OpenAIServerModel(model_id="prop-model", api_base=f"{server.url}/v1", max_retries=0)

    @E2E_SETTINGS
    @example(("><<<", ["<", "><<<"]))  # the server streams 3-character pieces: '><<', '<'
    @given(text_and_stops())
    def check(case: tuple[str, list[str]]) -> None:
        text, stops = case
        server.reply = text
        assert_contract(_streamed(model, MSGS, stops), text, stops)

    check()


def test_azure_backend_keeps_the_stop_contract(server: RecordingServer) -> None:
    model = AzureOpenAIServerModel(
        model_id="prop-deployment",
        azure_endpoint=server.url,
        api_key="k",
        api_version="2024-10-21",
        max_retries=0,
    )

    @E2E_SETTINGS
    @given(text_and_stops())
    def check(case: tuple[str, list[str]]) -> None:
        text, stops = case
        server.reply = text
        assert_contract(model.generate(MSGS, stop_sequences=stops).content, text, stops)
        assert server.last.path == "/openai/deployments/prop-deployment/chat/completions"
        assert_contract(_streamed(model, MSGS, stops[:1]), text, stops[:1])

    check()


@SETTINGS
@given(text_and_stops())
def test_callable_backend_keeps_the_stop_contract(case: tuple[str, list[str]]) -> None:
    text, stops = case
    received: list[Any] = []

    def echo(messages: list[dict[str, Any]], stop_sequences: list[str] | None = None) -> str:
        received.append(stop_sequences)
        return messages[-1]["content"]  # ignores the stops: the model layer must trim

    model = CallableModel(fn=echo)
    out = model.generate([{"role": "user", "content": text}], stop_sequences=stops)
    assert_contract(out.content, text, stops)
    assert received == [normalize_stop_sequences(stops) or None]


@SETTINGS
@given(text_and_stops(max_size=20))
def test_example_custom_model_keeps_the_stop_contract(case: tuple[str, list[str]]) -> None:
    from examples.custom_model import custom_model

    text, stops = case
    msgs = [{"role": "user", "content": text}]
    full = custom_model(msgs)
    model = CallableModel(fn="examples.custom_model.custom_model")
    assert_contract(model.generate(msgs, stop_sequences=stops).content, full, stops)


def test_hf_inference_backend_keeps_the_stop_contract(
    server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    from modelfactory.backends.hf_inference import HfApiModel

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read once at import
    model = HfApiModel(model_id="prop-model", base_url=server.url)

    @E2E_SETTINGS
    @given(text_and_stops())
    def check(case: tuple[str, list[str]]) -> None:
        text, stops = case
        server.reply = text
        assert_contract(model.generate(MSGS, stop_sequences=stops).content, text, stops)
        assert server.last.body.get("stop") == (normalize_stop_sequences(stops) or None)
        assert_contract(_streamed(model, MSGS, stops), text, stops)

    check()


@pytest.mark.parametrize("supports_stop", [True, False])
def test_litellm_backend_keeps_the_stop_contract(server: RecordingServer, supports_stop: bool) -> None:
    from modelfactory.backends.litellm import LiteLLMModel

    model = LiteLLMModel(
        model_id="openai/prop-model", api_base=f"{server.url}/v1", api_key="k", supports_stop=supports_stop
    )

    @settings(E2E_SETTINGS, max_examples=20)
    @given(text_and_stops())
    def check(case: tuple[str, list[str]]) -> None:
        text, stops = case
        server.reply = text
        assert_contract(model.generate(MSGS, stop_sequences=stops).content, text, stops)
        assert ("stop" in server.last.body) is bool(supports_stop and stops)
        assert_contract(_streamed(model, MSGS, stops), text, stops)

    check()
