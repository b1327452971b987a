"""``modelfactory serve`` in front of a vision-language model (the tiny Llava of
``tests/backends/tiny_vlm.py``, random weights): ``image_url`` parts holding data URLs reach the model
on every path a request takes (batched, streamed, with tools, with a sampled seed), and each reply is the
one the library gives for the same conversation with the PIL image itself (issue 23 item 7)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("transformers")
openai = pytest.importorskip("openai")
Image = pytest.importorskip("PIL.Image")

from modelfactory import TransformersModel  # noqa: E402
from modelfactory.messages import pil_to_data_url  # noqa: E402
from modelfactory.serve import BackgroundServer, ServerSettings  # noqa: E402
from tests.backends.tiny_vlm import build_tiny_vlm  # noqa: E402

pytestmark = pytest.mark.server

COLOURS = [(200, 10, 10), (10, 10, 200), (10, 200, 10)]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "describe",
            "parameters": {"type": "object", "properties": {"what": {"type": "string"}}},
        },
    }
]


@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> TransformersModel:
    path = build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"))
    return TransformersModel(str(path), max_tokens=6, device="cpu").load()


@pytest.fixture(scope="module")
def server(vlm: TransformersModel) -> Iterator[BackgroundServer]:
    srv = BackgroundServer(vlm, ServerSettings(port=0, log_level="warning", batch_window_ms=200))
    with srv:  # started, and stopped after the module
        yield srv


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Any:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)


def _image(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Any:
    return Image.new("RGB", size, colour)


def _library(image: Any) -> list[dict[str, Any]]:
    """The conversation as an agent holds it: a PIL image part."""
    return [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}]}
    ]


def _wire(image: Any) -> list[dict[str, Any]]:
    """The same conversation as an OpenAI client sends it: an image_url part with a data URL."""
    url = pil_to_data_url(image)
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What?"}],
        }
    ]


def test_an_image_request_is_answered_as_the_library_answers_it(
    client: Any, vlm: TransformersModel, server: BackgroundServer
) -> None:
    image = _image(COLOURS[0])
    expected = vlm.generate(_library(image))
    before = len(server.dispatcher.batches)
    reply = client.chat.completions.create(model=server.app.state.serve.name, messages=_wire(image))
    assert reply.choices[0].message.content == expected.content
    assert reply.usage.prompt_tokens == expected.token_usage.input_tokens  # the image's tokens count
    assert server.dispatcher.batches[before:] == [1]  # it went through generate_batch


def test_concurrent_image_requests_batch_and_keep_their_replies(
    vlm: TransformersModel, server: BackgroundServer, client: Any
) -> None:
    images = [_image(c) for c in COLOURS]
    expected = [vlm.generate(_library(im), temperature=0.8, seed=i).content for i, im in enumerate(images)]
    barrier = threading.Barrier(len(images))
    before = len(server.dispatcher.batches)

    def ask(i: int) -> str:
        barrier.wait()
        reply = client.chat.completions.create(
            model=server.app.state.serve.name, messages=_wire(images[i]), temperature=0.8, seed=i
        )
        return str(reply.choices[0].message.content)

    with ThreadPoolExecutor(len(images)) as pool:
        got = list(pool.map(ask, range(len(images))))
    assert got == expected
    sizes = server.dispatcher.batches[before:]
    assert sum(sizes) == len(images) and len(sizes) < len(images), sizes


def test_a_streamed_image_request_adds_up_to_the_reply(
    vlm: TransformersModel, server: BackgroundServer, client: Any
) -> None:
    image = _image(COLOURS[1])
    expected = vlm.generate(_library(image))
    stream = client.chat.completions.create(
        model=server.app.state.serve.name,
        messages=_wire(image),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.content
    assert chunks[-1].usage.prompt_tokens == expected.token_usage.input_tokens
    assert chunks[-1].usage.completion_tokens == expected.token_usage.output_tokens


def test_tools_reach_a_vlm_and_a_large_image_is_not_taken_for_a_long_prompt(
    vlm: TransformersModel, server: BackgroundServer, client: Any
) -> None:
    """The tools go into the prompt (it grows by the tools block), and a picture whose data URL is longer
    than the context times the longest token is still answered: its tokens are the processor's."""
    image = _image(COLOURS[2])
    plain = vlm.count_prompt_tokens(_wire(image))
    with_tools = vlm.count_prompt_tokens(_wire(image), TOOLS)
    assert with_tools > plain
    reply = client.chat.completions.create(
        model=server.app.state.serve.name, messages=_wire(image), tools=TOOLS, tool_choice="auto"
    )
    assert reply.usage.prompt_tokens == with_tools
    noise = Image.effect_noise((300, 300), 64).convert("RGB")  # incompressible: a long data URL
    assert len(pil_to_data_url(noise)) > (vlm.context_length or 0) * 64
    big = client.chat.completions.create(model=server.app.state.serve.name, messages=_wire(noise))
    assert big.choices[0].message.content == vlm.generate(_library(noise)).content


def test_logprobs_on_a_vlm_are_refused(server: BackgroundServer) -> None:
    import httpx

    body = {"messages": _wire(_image(COLOURS[0])), "logprobs": True}
    resp = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    assert resp.status_code == 400, resp.text
    assert (
        resp.json()["error"]["code"] == "unsupported" and "vision-language" in resp.json()["error"]["message"]
    )
