"""``modelfactory serve`` as real clients use it (issue 23 items 12-17): the openai SDK and LiteLLM against
the built-in tiny transformers model, every reply checked against the openai SDK's own pydantic types,
strictly (no field missing, none OpenAI does not document), plus ``/v1/completions`` (lm-eval's
loglikelihood route: ``echo`` + ``logprobs``) and ``/v1/embeddings``.

The log-probabilities and vectors are checked against the model's own forward pass, computed here."""

from __future__ import annotations

import base64
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
pytest.importorskip("torch")
openai = pytest.importorskip("openai")

from openai.types import Completion, CreateEmbeddingResponse  # noqa: E402
from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from modelfactory.backends.transformers import TransformersModel  # noqa: E402
from modelfactory.messages import ChatMessage  # noqa: E402
from modelfactory.serve import BackgroundServer, ServerSettings  # noqa: E402
from modelfactory.serve.toolstream import ToolCallStream  # noqa: E402

pytestmark = pytest.mark.server

KEY = "sk-serve-clients-0123456789"
NAME = "tiny-llama"
ASK = [{"role": "user", "content": "What is the capital of France?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture(scope="module")
def tiny() -> TransformersModel:
    return TransformersModel(model_id="builtin:tiny-llama", dtype="float32", max_new_tokens=16).load()


@pytest.fixture(scope="module")
def server(tiny: TransformersModel) -> Iterator[BackgroundServer]:
    srv = BackgroundServer(
        tiny, ServerSettings(port=0, api_key=KEY, log_level="warning", batch_window_ms=200)
    )
    with srv:  # started, and stopped after the module
        yield srv


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Any:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def post(server: BackgroundServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=60)


def strict(cls: type[BaseModel], body: Any) -> Any:
    """``body`` as the openai SDK's type ``cls``, validated strictly, with no field the type lacks."""
    obj = cls.model_validate(body, strict=True)
    _no_extra(obj, cls.__name__)
    return obj


def _no_extra(obj: Any, path: str) -> None:
    if isinstance(obj, BaseModel):
        extra = obj.model_extra or {}
        assert not extra, f"{path}: fields OpenAI does not document: {sorted(extra)}"
        for name in type(obj).model_fields:
            _no_extra(getattr(obj, name), f"{path}.{name}")
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            _no_extra(item, f"{path}[{i}]")


# --------------------------------------------------------------------------- chat: shapes


def test_text_response_format_means_no_format(server: BackgroundServer, tiny: TransformersModel) -> None:
    """OpenAI's default ``{"type": "text"}`` (the openai SDK's users send it) is no constraint at all."""
    body = {"messages": ASK, "temperature": 0, "max_tokens": 8}
    plain = post(server, "/v1/chat/completions", body)
    text = post(server, "/v1/chat/completions", {**body, "response_format": {"type": "text"}})
    assert text.status_code == 200, text.text
    assert (
        strict(ChatCompletion, text.json()).choices[0].message.content
        == (plain.json()["choices"][0]["message"]["content"])
    )
    refused = post(server, "/v1/chat/completions", {**body, "response_format": {"type": "json_object"}})
    assert refused.status_code == 400  # a real constraint this backend cannot apply: still a 400


def test_openai_sdk_replies_and_chunks_are_openais_types(client: Any) -> None:
    reply = client.chat.completions.with_raw_response.create(
        model=NAME, messages=ASK, temperature=0, max_tokens=8
    )
    completion = strict(ChatCompletion, reply.http_response.json())
    assert completion.usage.prompt_tokens_details.cached_tokens is not None
    stream = client.chat.completions.create(
        model=NAME,
        messages=ASK,
        temperature=0,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [strict(ChatCompletionChunk, c.model_dump(exclude_unset=True)) for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == completion.usage.completion_tokens
    # Inspect reads the streamed usage's cached tokens as it reads the non-streamed one's
    assert isinstance(usage.prompt_tokens_details.cached_tokens, int)


def test_litellm_reads_replies_and_streams(server: BackgroundServer, client: Any) -> None:
    litellm = pytest.importorskip("litellm")
    args = {"model": f"openai/{NAME}", "api_base": f"{server.url}/v1", "api_key": KEY, "max_tokens": 8}
    reply = litellm.completion(messages=ASK, temperature=0, **args)
    expected = client.chat.completions.create(model=NAME, messages=ASK, temperature=0, max_tokens=8)
    assert reply.choices[0].message.content == expected.choices[0].message.content
    streamed = litellm.completion(
        messages=ASK, temperature=0, stream=True, stream_options={"include_usage": True}, **args
    )
    pieces = list(streamed)
    assert (
        "".join(p.choices[0].delta.content or "" for p in pieces if p.choices)
        == reply.choices[0].message.content
    )


# --------------------------------------------------------------------------- chat: honoured or refused


def test_chat_logprobs_are_the_models_or_refused(
    server: BackgroundServer, client: Any, tiny: TransformersModel
) -> None:
    """Non-streamed, each reply token's log-probability under the model (computed here from its forward
    pass over the templated prompt); streamed, or top_logprobs without logprobs: a 400, never ignored."""
    raw = client.chat.completions.with_raw_response.create(
        model=NAME, messages=ASK, temperature=0, max_tokens=8, logprobs=True, top_logprobs=2
    )
    reply = strict(ChatCompletion, raw.http_response.json()).choices[0]
    content = reply.logprobs.content
    assert "".join(t.token for t in content) == reply.message.content
    prompt = tiny.chat_prompt(ASK)
    ids = tiny.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    new = tiny.tokenizer(reply.message.content, add_special_tokens=False)["input_ids"]
    expected = _forward_logprobs(tiny, ids + new)[-len(new) :]
    assert [t.logprob for t in content] == pytest.approx(expected, abs=1e-4)
    for t in content:  # greedy: each token is the most likely one, first among its alternatives
        assert len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        assert bytes(t.bytes) == t.token.encode()
    for extra, param in (
        ({"logprobs": True, "stream": True}, "logprobs"),
        ({"top_logprobs": 1}, "top_logprobs"),
    ):
        resp = post(server, "/v1/chat/completions", {"messages": ASK, "max_tokens": 4, **extra})
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == param
    plain = post(server, "/v1/chat/completions", {"messages": ASK, "max_tokens": 4, "logprobs": False})
    assert plain.status_code == 200 and plain.json()["choices"][0]["logprobs"] is None


def test_tool_choice_is_honoured_or_refused(server: BackgroundServer) -> None:
    body = {"messages": ASK, "max_tokens": 4, "tools": TOOLS}
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        resp = post(server, "/v1/chat/completions", {**body, "tool_choice": choice})
        assert resp.status_code == 400, resp.text
        err = resp.json()["error"]
        assert err["param"] == "tool_choice" and err["code"] == "unsupported"
        assert "LlamaCppModel" in err["message"]
    bad = post(server, "/v1/chat/completions", {**body, "tool_choice": "sometimes"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tool_choice"
    none = post(server, "/v1/chat/completions", {**body, "tool_choice": "none", "temperature": 0})
    assert none.status_code == 200
    assert strict(ChatCompletion, none.json()).choices[0].message.tool_calls is None


def test_an_api_backend_gets_the_clients_tool_choice_and_refuses_logprobs() -> None:
    """Serve in front of an API backend (OpenAIServerModel on the recording server) sends upstream the
    tool_choice the client sent, an absent one as ``auto`` (OpenAI's default), never the library's agent
    default ``required``; ``none`` sends no tools. logprobs: a 400, never silently dropped."""
    from modelfactory import OpenAIServerModel
    from modelfactory.testing import RecordingServer

    with RecordingServer(reply="fine") as upstream:
        model = OpenAIServerModel(model_id="up", api_base=f"{upstream.url}/v1", api_key="k", max_retries=0)
        served = BackgroundServer(model, ServerSettings(port=0, api_key=KEY, log_level="warning"))
        with served:
            body = {"messages": ASK, "tools": TOOLS}
            named = {"type": "function", "function": {"name": "get_weather"}}
            for sent, expected in (
                (None, "auto"),
                ("auto", "auto"),
                ("required", "required"),
                (named, named),
            ):
                extra = {} if sent is None else {"tool_choice": sent}
                resp = post(served, "/v1/chat/completions", {**body, **extra})
                assert resp.status_code == 200, resp.text
                assert upstream.last.body["tool_choice"] == expected
                assert upstream.last.body["tools"][0]["function"]["name"] == "get_weather"
            resp = post(served, "/v1/chat/completions", {**body, "tool_choice": "none"})
            assert resp.status_code == 200 and "tools" not in upstream.last.body
            asked = len(upstream.requests)
            resp = post(served, "/v1/chat/completions", {"messages": ASK, "logprobs": True})
            assert resp.status_code == 400 and resp.json()["error"]["param"] == "logprobs"
            assert len(upstream.requests) == asked  # refused before any upstream call


# --------------------------------------------------------------------------- seeded batching


def test_greedy_seeded_requests_share_a_batch(server: BackgroundServer, tiny: TransformersModel) -> None:
    """lm-eval sends ``seed: 1234`` with every greedy request: the seed decides nothing there, so they
    batch, and each reply is what the request gets alone."""
    questions = ["Hi", "Tell me a story.", "Count to ten.", "What do bees make?"]
    expected = [
        tiny([{"role": "user", "content": q}], temperature=0, max_tokens=8).content for q in questions
    ]
    before = len(server.dispatcher.batches)
    barrier = threading.Barrier(len(questions))

    def ask(q: str) -> str:
        body = {"messages": [{"role": "user", "content": q}], "temperature": 0, "max_tokens": 8, "seed": 1234}
        barrier.wait()
        resp = post(server, "/v1/chat/completions", body)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["choices"][0]["message"]["content"])

    with ThreadPoolExecutor(len(questions)) as pool:
        got = list(pool.map(ask, questions))
    assert got == expected
    sizes = server.dispatcher.batches[before:]
    assert sum(sizes) == len(questions) and max(sizes) > 1, sizes


def test_sampled_seeded_requests_share_a_batch(server: BackgroundServer) -> None:
    """lm-eval sends ``seed`` (1234) with every request, sampled ones too, ``num_concurrent`` at a time:
    they share generate_batch calls, and each reply is the one the same request gets alone (each row
    samples from its own generator)."""
    questions = ["Hi", "Tell me a story.", "Count to ten.", "What do bees make?"]
    seeds = [1234, 1234, 7, 2**40]
    bodies = [
        {"messages": [{"role": "user", "content": q}], "temperature": 0.8, "max_tokens": 8, "seed": s}
        for q, s in zip(questions, seeds, strict=True)
    ]

    def ask(body: dict[str, Any]) -> str:
        resp = post(server, "/v1/chat/completions", body)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["choices"][0]["message"]["content"])

    alone = [ask(body) for body in bodies]  # one at a time: each a generate_batch call of one row
    before = len(server.dispatcher.batches)
    barrier = threading.Barrier(len(bodies))

    def together(body: dict[str, Any]) -> str:
        barrier.wait()
        return ask(body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        got = list(pool.map(together, bodies))
    assert got == alone
    sizes = server.dispatcher.batches[before:]  # one entry per generate_batch call
    assert sum(sizes) == len(bodies) and len(sizes) < len(bodies), sizes


# --------------------------------------------------------------------------- streamed tool calls


def _tool_text(city: str) -> str:
    return '{"name": "get_weather", "arguments": {"city": ' + f'"{city}"' + "}}"


@settings(max_examples=60, deadline=None)
@given(
    prefix=st.sampled_from(["", "Sure. ", "no braces here"]),
    city=st.text(alphabet="abcxyz ", min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=6),
    tool=st.booleans(),
)
def test_a_streamed_tool_call_is_the_non_streamed_parse(
    tiny: TransformersModel, prefix: str, city: str, cuts: list[int], tool: bool
) -> None:
    """However the text is cut into chunks, the stream gives the content before the call and the same
    tool call as the non-streamed reply's parse (or, without a call, the same text as content)."""
    text = prefix + (_tool_text(city) if tool else "{not json")
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    splitter = ToolCallStream(tiny.parse_tool_calls)
    content = "".join(splitter.feed(text[a:b]) for a, b in zip(bounds, bounds[1:], strict=False))
    rest, deltas = splitter.finish()
    content += rest
    whole = tiny.parse_tool_calls(ChatMessage(role="assistant", content=text)) if tool else None
    if not tool:
        assert content == text and deltas == []
        return
    assert whole is not None and whole.tool_calls
    assert content == prefix
    first, args = deltas
    assert first[0]["id"] and first[0]["type"] == "function" and first[0]["index"] == 0
    assert first[0]["function"]["name"] == whole.tool_calls[0].function.name
    assert "id" not in args[0] and args[0]["index"] == 0
    assert args[0]["function"]["arguments"] == '{"city": ' + f'"{city}"' + "}"


# --------------------------------------------------------------------------- /v1/completions


def _forward_logprobs(tiny: TransformersModel, ids: list[int]) -> list[float]:
    """Each token's log-probability given those before it, from the model's own forward pass."""
    rt = tiny.runtime
    torch = rt.torch
    with torch.inference_mode():
        logits = rt.model(torch.tensor([ids])).logits[0].float()
    lsm = torch.log_softmax(logits, dim=-1)
    return [float(lsm[j - 1, ids[j]]) for j in range(1, len(ids))]


def _without_first_logprob(body: dict[str, Any]) -> dict[str, Any]:
    out = {**body, "choices": []}
    for choice in body["choices"]:
        lp = choice["logprobs"]
        lp = {k: v[1:] for k, v in lp.items()}
        out["choices"].append({**choice, "logprobs": lp})
    return out


def test_completions_echo_logprobs_score_the_prompt(client: Any, tiny: TransformersModel) -> None:
    """lm-eval's loglikelihood request: the prompt echoed with each token's log-probability."""
    prompt = "The capital of France is Paris"
    raw = client.completions.with_raw_response.create(
        model=NAME, prompt=prompt, max_tokens=0, echo=True, logprobs=3, temperature=0
    )
    body = raw.http_response.json()
    lp0 = body["choices"][0]["logprobs"]
    # Nothing predicts an echoed prompt's first token: null, as OpenAI's API (and vLLM) send, though the
    # SDK's type says list[float]. Everything else is checked strictly against the type.
    assert lp0["token_logprobs"][0] is None and lp0["top_logprobs"][0] is None
    got = strict(Completion, _without_first_logprob(body))
    choice = got.choices[0]
    ids = tiny.tokenizer(prompt)["input_ids"]
    assert choice.text == prompt
    assert got.usage.prompt_tokens == len(ids) and got.usage.completion_tokens == 0
    lp = choice.logprobs
    assert lp.token_logprobs == pytest.approx(_forward_logprobs(tiny, ids), abs=1e-4)
    assert "".join(lp0["tokens"]) == prompt
    assert all(
        len(top) == 3 and max(top.values()) >= tok
        for top, tok in zip(lp.top_logprobs, lp.token_logprobs, strict=True)
    )
    # token ids as a prompt (lm-eval's tokenized requests): the same scores
    by_ids = client.completions.create(model=NAME, prompt=ids, max_tokens=0, echo=True, logprobs=1)
    assert by_ids.choices[0].logprobs.token_logprobs[1:] == pytest.approx(lp.token_logprobs, abs=1e-4)


def test_completions_greedy_text_is_the_argmax(client: Any, tiny: TransformersModel) -> None:
    prompts = ["Once upon a time", "Hello"]
    got = strict(
        Completion,
        client.completions.with_raw_response.create(
            model=NAME, prompt=prompts, max_tokens=6, temperature=0, logprobs=1
        ).http_response.json(),
    )
    assert [c.index for c in got.choices] == [0, 1]
    for prompt, choice in zip(prompts, got.choices, strict=True):
        assert choice.text and not choice.text.startswith(prompt)
        lp = choice.logprobs
        assert "".join(lp.tokens) == choice.text
        for tok, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
            assert tok == pytest.approx(max(top.values()))  # greedy: each token is the most likely one
        full = (
            tiny.tokenizer(prompt)["input_ids"]
            + tiny.tokenizer(choice.text, add_special_tokens=False)["input_ids"]
        )
        assert lp.token_logprobs == pytest.approx(_forward_logprobs(tiny, full)[-len(lp.tokens) :], abs=1e-4)
    stopped = client.completions.create(
        model=NAME, prompt=prompts[0], max_tokens=6, temperature=0, stop=[got.choices[0].text[2:4]]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert (
        stopped.choices[0].text == got.choices[0].text[: got.choices[0].text.index(got.choices[0].text[2:4])]
    )


def test_completions_refuse_what_they_cannot_do(server: BackgroundServer) -> None:
    for extra, param in (({"stream": True}, "stream"), ({"n": 2}, "n"), ({"suffix": "x"}, "suffix")):
        resp = post(server, "/v1/completions", {"prompt": "Hi", **extra})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text
    resp = post(server, "/v1/completions", {"prompt": "Hi", "max_tokens": "3"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "max_tokens"
    resp = post(server, "/v1/completions", {"prompt": [10**9], "max_tokens": 0, "echo": True})
    assert resp.status_code == 400 and "token ids" in resp.json()["error"]["message"]
    resp = httpx.post(server.url + "/v1/completions", json={"prompt": "Hi"}, timeout=10)
    assert resp.status_code == 401


# --------------------------------------------------------------------------- /v1/embeddings


def test_embeddings_are_the_mean_of_the_last_hidden_state(client: Any, tiny: TransformersModel) -> None:
    texts = ["Paris is in France.", "Bees make honey."]
    # the SDK asks for base64 (and decodes it itself); its type describes the float form
    packed_body = client.embeddings.with_raw_response.create(model=NAME, input=texts).http_response.json()
    body = strict(
        CreateEmbeddingResponse,
        client.embeddings.with_raw_response.create(
            model=NAME, input=texts, encoding_format="float"
        ).http_response.json(),
    )
    decoded_by_sdk = client.embeddings.create(model=NAME, input=texts)
    rt = tiny.runtime
    torch = rt.torch
    for i, text in enumerate(texts):
        ids = tiny.tokenizer(text)["input_ids"]
        with torch.inference_mode():
            hidden = rt.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        expected = hidden.float().mean(dim=0).tolist()
        packed = base64.b64decode(packed_body["data"][i]["embedding"])
        decoded = list(struct.unpack(f"<{len(packed) // 4}f", packed))
        assert decoded == pytest.approx(expected, abs=1e-4)
        assert body.data[i].embedding == pytest.approx(expected, abs=1e-4)
        assert decoded_by_sdk.data[i].embedding == pytest.approx(expected, abs=1e-4)
    assert body.usage.prompt_tokens == sum(len(tiny.tokenizer(t)["input_ids"]) for t in texts)
    resp = client.embeddings.with_raw_response.create(model=NAME, input="x", encoding_format="float")
    assert len(resp.parse().data) == 1
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model=NAME, input="x", dimensions=8)
