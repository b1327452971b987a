"""Issue 22 item 1: streaming scrubbed text must not be an oracle for the key it scrubs.

The attack: an upstream echoes the client's text and holds a key the server scrubs from replies. The
client sends guesses and watches how the streamed reply comes back (the chunk boundaries, which chunk
holds which characters). When the scrubber held back only a tail that could begin the key, a guess that
began the key came back cut differently, and the key was rebuilt one character at a time (issue 22:
``sk-PLANT-cfgdef0`` in 478 requests). Here the same attack runs against the scrubber (5,000 requests,
the issue's figure) and, smaller, against ``modelfactory serve`` over a real upstream on 127.0.0.1
(``python -m bench.stream_oracle`` runs the 5,000 over HTTP too).
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.stream_oracle import ALPHABET, KEY, attack, pieces, probe, scrubber_observation, serve_observation
from modelfactory.secrets import STREAM_WINDOW_STEP, StreamScrubber, scrub


def test_the_prefix_oracle_recovers_nothing_in_5000_requests() -> None:
    """Before the fix the same attack rebuilt the whole key, one character per 64 requests (1,024)."""
    known, spent, standouts = attack(scrubber_observation([KEY]), budget=5000)
    assert spent > 4900
    assert standouts == 0 and known == ""


secret_text = st.text(alphabet="abcdefgh-", min_size=4, max_size=40)


@given(
    secrets=st.lists(secret_text, min_size=1, max_size=3),
    parts=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40), st.text("abcdefgh- ", max_size=4))),
    cuts=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=30),
)
def test_what_is_released_when_depends_only_on_the_lengths_fed(
    secrets: list[str], parts: list[tuple[int, int, str]], cuts: list[int]
) -> None:
    """A text built from pieces of the secrets (their prefixes above all) with no whole secret in it
    comes out unchanged, in chunks of exactly the lengths a text of the same lengths with nothing
    secret-like in it gets: the release moments say nothing about the secrets."""
    text = "".join(secrets[i % len(secrets)][:n] + other for i, n, other in parts)
    if any(s in text for s in secrets):
        text = scrub(text, secrets).replace("***", "")  # no whole secret: scrub them out first
    if any(s in text for s in secrets):
        return
    fed, at = [], 0
    for n in cuts * (1 + len(text) // max(1, sum(cuts))):
        if at >= len(text):
            break
        fed.append(text[at : at + n])
        at += n
    fed.append(text[at:])

    def run(chunks: list[str]) -> list[str]:
        scrubber = StreamScrubber(secrets)
        return [scrubber.feed(c) for c in chunks] + [scrubber.flush()]

    got = run(fed)
    blank = run(["z" * len(c) for c in fed])
    assert "".join(got) == text
    assert [len(c) for c in got] == [len(c) for c in blank]


def test_a_whole_key_split_anywhere_is_still_scrubbed() -> None:
    for cut in range(1, len(KEY)):
        scrubber = StreamScrubber([KEY])
        text = f"a {KEY[:cut]}" + f"{KEY[cut:]} b"
        out = "".join(scrubber.feed(p) for p in (text[: 2 + cut], text[2 + cut :])) + scrubber.flush()
        assert out == "a *** b"


def test_the_window_covers_every_form_and_hides_the_keys_length() -> None:
    """The delay is the longest string scrubbed rounded up to 32: it covers each of them (so none is cut
    by a release), and a client measuring it learns a range, not the key's length."""
    for n in range(4, 100):
        scrubber = StreamScrubber(["k" * n])
        assert scrubber.window % STREAM_WINDOW_STEP == 0
        assert scrubber.window >= max(len(s) for s in scrubber.secrets)
    assert len({StreamScrubber(["k" * n]).window for n in range(4, 17)}) == 1
    assert StreamScrubber([]).window == 0  # nothing to hide: nothing held


def _forms(key: str) -> list[str]:
    """Forms a key may come back in (an upstream echoing its own ``Authorization: Basic ...``)."""
    raw = key.encode()
    b64 = [base64.b64encode(d).decode() for d in (raw, raw + b":", b":" + raw, b"user:" + raw)]
    return [key, *b64, quote(key, safe=""), json.dumps(key)[1:-1]]


@pytest.mark.parametrize("form", _forms(KEY + "/+&é"))
def test_every_form_scrub_knows_is_caught_in_a_stream_split_anywhere(form: str) -> None:
    """Whatever forms of a key :func:`scrub` replaces (the key itself; its derived forms, Basic base64,
    URL-encoded, where the policy names them), the stream catches them too, however they are cut."""
    key = KEY + "/+&é"
    if scrub(f"a {form} b", [key]) == f"a {form} b":
        return  # not a form the policy scrubs: nothing for the stream to match
    text = f"a {form} b"
    for cut in range(1, len(text)):
        scrubber = StreamScrubber([key])  # as serve builds it: from the key alone
        out = scrubber.feed(text[:cut]) + scrubber.feed(text[cut:]) + scrubber.flush()
        assert out == scrub(text, [key]) and form not in out


# --------------------------------------------------------------------------- through modelfactory serve


@pytest.mark.server
def test_the_oracle_through_serve_learns_nothing() -> None:
    """``modelfactory serve`` in front of an upstream that holds the key and echoes each client's text,
    three characters per chunk: the same attack, over real HTTP, sees no guess stand out. Before the
    fix it found ``s``, ``sk``, ``sk-`` ... (the key's first letters) here."""
    pytest.importorskip("fastapi")
    from modelfactory import OpenAIServerModel
    from modelfactory.serve import BackgroundServer, ServerSettings
    from modelfactory.testing import RecordingServer

    with RecordingServer(echo=True) as upstream:
        model = OpenAIServerModel(
            model_id="m", api_base=upstream.url + "/v1", api_key=KEY, retry={"max_attempts": 1}
        )
        with (
            BackgroundServer(model, ServerSettings(port=0, log_level="warning")) as url,
            serve_observation(url, "m") as observe,
        ):
            assert "".join(observe("echo " + KEY + " done")) == "echo *** done"  # it does scrub
            known, spent, standouts = attack(observe, budget=3 * len(ALPHABET))
    assert spent == 3 * len(ALPHABET)
    assert standouts == 0 and known == ""


@pytest.mark.server
def test_tool_call_arguments_stream_the_same_for_every_guess() -> None:
    """The same for a tool call's arguments: an upstream that streams ``{"q": "<guess>..."}`` in
    pieces; the argument chunks the client gets have the same lengths whether or not the guess begins
    the key."""
    pytest.importorskip("fastapi")
    import httpx

    from modelfactory import OpenAIServerModel
    from modelfactory.serve import BackgroundServer, ServerSettings
    from modelfactory.testing import RecordingServer

    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}

    def event(arguments: str, first: bool) -> bytes:
        fn: dict[str, object] = {"arguments": arguments}
        call: dict[str, object] = {"index": 0, "function": fn}
        if first:
            fn["name"] = "search"
            call.update(id="call_0", type="function")
        delta = {"role": "assistant", "tool_calls": [call]}
        return f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': delta}]})}\n\n".encode()

    def sse(guess: str) -> bytes:
        text = '{"q": "' + probe(guess) + '"}'
        parts = pieces(text)
        done = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
        events = [event(p, i == 0) for i, p in enumerate(parts)]
        return b"".join([*events, f"data: {json.dumps(done)}\n\n".encode(), b"data: [DONE]\n\n"])

    lengths: dict[str, list[int]] = {}
    with RecordingServer() as upstream:
        model = OpenAIServerModel(
            model_id="m", api_base=upstream.url + "/v1", api_key=KEY, retry={"max_attempts": 1}
        )
        ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with (
            BackgroundServer(model, ServerSettings(port=0, log_level="warning")) as url,
            httpx.Client(base_url=url, timeout=60) as client,
        ):
            for guess in ("sk-", "ab-", "sk-PLA", "zzzzzz"):
                upstream.enqueue(200, sse(guess))
                text = client.post("/v1/chat/completions", json=ask).text
                got = []
                for line in text.splitlines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        for choice in json.loads(line[6:]).get("choices") or []:
                            for tc in choice["delta"].get("tool_calls") or []:
                                got.append((tc.get("function") or {}).get("arguments") or "")
                assert "".join(got) == '{"q": "' + probe(guess) + '"}'
                lengths[guess] = [len(g) for g in got]
    assert lengths["sk-"] == lengths["ab-"]
    assert lengths["sk-PLA"] == lengths["zzzzzz"]
