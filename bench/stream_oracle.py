"""The stream-scrubbing oracle (issue 22 item 1), run as an attacker would: how much of the upstream's key
a client of ``modelfactory serve`` recovers from how its echoed guesses stream back.

    .venv/bin/python -m bench.stream_oracle [--requests 5000] [--scrubber-only]

The upstream (:class:`modelfactory.testing.RecordingServer`, ``echo=True``) holds the key
:data:`KEY` and streams each client's text back three characters per chunk; ``modelfactory serve`` (an
``OpenAIServerModel`` pointed at it) scrubs the key from what it streams. The client runs :func:`attack`:
extend the prefix known so far by the one character whose echo was held back longer than every other's.
Printed: the prefix recovered, the requests spent, how many guesses stood out, against the scrubber alone
and over HTTP. ``tests/test_serve_stream_oracle.py`` runs the same attack (5,000 requests against the
scrubber, a shorter one over HTTP).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence

from modelfactory.secrets import StreamScrubber

KEY = "sk-PLANT-cfgdef0"
# what the attacker tries at each position: letters, digits and the key's punctuation
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
PIECE = 3  # the echoing upstream streams its text three characters at a time (as modelfactory.testing)

Observe = Callable[[str], tuple[str, ...]]


def pieces(text: str, size: int = PIECE) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def probe(guess: str) -> str:
    """The client's text for one guess: padded in front so the guess ends where an upstream piece ends
    (what made a held-back tail visible), then more text after it."""
    return "x" * (-len(guess) % PIECE) + guess + "......"


def scrubber_observation(secrets: Sequence[str]) -> Observe:
    """What a client sees of one streamed echo through :class:`StreamScrubber`, as serve sends it: each
    non-empty release is a chunk, then the held-back rest."""

    def observe(text: str) -> tuple[str, ...]:
        scrubber = StreamScrubber(secrets)
        out = [scrubber.feed(p) for p in pieces(text)] + [scrubber.flush()]
        return tuple(chunk for chunk in out if chunk)

    return observe


def held(chunks: tuple[str, ...], guess: str) -> int:
    """How many characters of the guess's end came back only in a later chunk: what a scrubber holding
    back "a tail that could begin the key" gives away (the whole guess when it begins the key)."""
    end = len(probe(guess)) - 6  # the index just past the guess in the probe text
    boundary, at = 0, 0
    for chunk in chunks:
        at += len(chunk)
        if at <= end:
            boundary = at
    return end - boundary


def attack(observe: Observe, budget: int, seed: int = 0) -> tuple[str, int, int]:
    """The prefix-extension attack with ``budget`` requests: try every next character after the prefix
    known so far; the one whose end was held back longest, if it alone was, is taken as the key's next
    character. With none standing out the attacker learns nothing and guesses one at random (so the
    whole budget is spent probing). Returns the prefix built from stand-outs only, the requests made,
    and how many stand-outs there were."""
    rng = random.Random(seed)
    known, blind, spent, standouts = "", "", 0, 0
    while spent + len(ALPHABET) <= budget:
        by_char: dict[str, int] = {}
        for c in ALPHABET:
            guess = (known or blind) + c
            by_char[c] = held(observe(probe(guess)), guess)
            spent += 1
        top = max(by_char.values())
        best = [c for c, n in by_char.items() if n == top]
        if len(best) == 1:  # one character was held back longer than all the others
            standouts += 1
            known = (known or blind) + best[0]
            blind = ""
        else:
            blind = (known or blind) + rng.choice(ALPHABET)
            if len(blind) > len(KEY):
                blind = ""
    return known, spent, standouts


@contextlib.contextmanager
def serve_observation(url: str, model_name: str) -> Iterator[Observe]:
    """What a client of the server at ``url`` sees of one streamed reply: its content chunks."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as client:

        def observe(text: str) -> tuple[str, ...]:
            ask = {"model": model_name, "messages": [{"role": "user", "content": text}], "stream": True}
            resp = client.post("/v1/chat/completions", json=ask)
            assert resp.status_code == 200, resp.text
            chunks = []
            for line in resp.text.splitlines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    for choice in json.loads(line[6:]).get("choices") or []:
                        content = choice["delta"].get("content")
                        if content:
                            chunks.append(content)
            return tuple(chunks)

        yield observe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--scrubber-only", action="store_true", help="skip the run over HTTP")
    args = parser.parse_args()
    t0 = time.perf_counter()
    known, spent, standouts = attack(scrubber_observation([KEY]), args.requests)
    took = time.perf_counter() - t0
    print(f"scrubber: recovered {known!r} of {KEY!r}; {spent} requests, {standouts} stood out ({took:.1f} s)")
    if args.scrubber_only:
        return
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
            t0 = time.perf_counter()
            known, spent, standouts = attack(observe, args.requests)
            took = time.perf_counter() - t0
    print(
        f"over HTTP: recovered {known!r} of {KEY!r}; {spent} requests, {standouts} stood out ({took:.1f} s)"
    )


if __name__ == "__main__":
    main()
