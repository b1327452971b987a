"""Every fake provider response we serve in tests, checked against the provider SDK's own response types.

Our fakes are hand-written; a fake that drifts from the real API would let a backend pass tests against a
shape no provider sends. So each one must pass:

- the openai SDK's pydantic models (``ChatCompletion``, ``ChatCompletionChunk``, ``Model``,
  ``ErrorObject``): validated, no field the SDK does not know (its models keep unknown keys as extras,
  which is how a misspelled key would hide), and nothing coerced (the dump equals the fake);
- huggingface_hub's dataclasses (``ChatCompletionOutput``, ``ChatCompletionStreamOutput``), for fakes the
  HF backend reads: every field the spec requires is there, with its type (its parser is permissive and
  fills gaps with None, so parsing alone proves nothing);
- Anthropic's SDK model (``anthropic.types.Message``) for the Messages API fakes, strictly as for openai.

Covered: the recording server over the wire (completion, stream, Anthropic message, model list, its own
error bodies, echo mode), the response builders of the backend tests, the runner bench's server, and the
OpenAI wire of ``modelfactory serve``.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from anthropic.types import Message as AnthropicMessage
from huggingface_hub import ChatCompletionOutput, ChatCompletionStreamOutput
from openai.types import Model as OpenAIModelInfo
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.shared import ErrorObject
from pydantic import BaseModel

from tests.servers.recording import RecordingServer

# --------------------------------------------------------------------------- the checks


def _extras(obj: Any, path: str = "$") -> Iterator[str]:
    if isinstance(obj, BaseModel):
        for key in obj.model_extra or {}:
            yield f"{path}.{key}"
        for name in type(obj).model_fields:
            yield from _extras(getattr(obj, name), f"{path}.{name}")
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _extras(item, f"{path}[{i}]")


def sdk_model(cls: type[BaseModel], payload: dict[str, Any]) -> None:
    """``payload`` is a valid ``cls`` with no key the SDK does not know and no value it had to coerce."""
    obj = cls.model_validate(payload)
    assert list(_extras(obj)) == [], f"keys {cls.__name__} does not know"
    assert obj.model_dump(mode="json", exclude_unset=True) == payload, f"values {cls.__name__} coerced"


def _optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _check_value(hint: Any, value: Any, path: str, may_lack: frozenset[str]) -> None:
    if _optional(hint):
        if value is None:
            return
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is list:
        assert isinstance(value, list), f"{path}: a list expected, got {value!r}"
        for i, item in enumerate(value):
            _check_value(typing.get_args(hint)[0], item, f"{path}[{i}]", may_lack)
    elif origin is typing.Literal:
        assert value in typing.get_args(hint), f"{path}: {value!r} not in {typing.get_args(hint)}"
    elif dataclasses.is_dataclass(hint):
        assert isinstance(value, dict), f"{path}: an object expected, got {value!r}"
        hf_dataclass(hint, value, path, may_lack=may_lack)
    elif hint is float:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{path}: {value!r}"
    elif hint in (int, str, bool):
        assert isinstance(value, hint) and (hint is bool or not isinstance(value, bool)), f"{path}: {value!r}"
    # Any / dict / object: anything goes


def hf_dataclass(
    cls: type, payload: dict[str, Any], path: str = "$", *, may_lack: frozenset[str] = frozenset()
) -> None:
    """Every field ``cls`` (a huggingface_hub inference type) requires is present, each known one typed."""
    cls.parse_obj_as_instance(payload)  # type: ignore[attr-defined]  # the SDK's own parser accepts it
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint, value = hints[field.name], payload.get(field.name)
        if value is None:
            assert _optional(hint) or field.name in may_lack, (
                f"{path}.{field.name}: required by {cls.__name__}, missing"
            )
        else:
            _check_value(hint, value, f"{path}.{field.name}", may_lack)


def openai_completion(payload: dict[str, Any]) -> None:
    sdk_model(ChatCompletion, payload)


def openai_and_hf_completion(payload: dict[str, Any]) -> None:
    sdk_model(ChatCompletion, payload)
    hf_dataclass(ChatCompletionOutput, payload)


def openai_and_hf_chunk(payload: dict[str, Any]) -> None:
    sdk_model(ChatCompletionChunk, payload)
    hf_dataclass(ChatCompletionStreamOutput, payload)


def anthropic_message(payload: dict[str, Any]) -> None:
    sdk_model(AnthropicMessage, payload)


def sse_events(body: str) -> list[dict[str, Any]]:
    """The JSON events of an SSE body, which must end with ``data: [DONE]``."""
    datas = [line[len("data: ") :] for line in body.split("\n\n") if line.strip()]
    assert datas[-1] == "[DONE]" and all(line.startswith("data: ") for line in body.strip().split("\n\n"))
    return [json.loads(d) for d in datas[:-1]]


# --------------------------------------------------------------------------- the checks catch drift


@pytest.mark.parametrize(
    ("drift", "check"),
    [
        (lambda p: p.update(choises=p.pop("choices")), openai_completion),  # misspelled key
        (lambda p: p["choices"][0]["message"].update(role="bot"), openai_completion),  # not a role
        (lambda p: p.update(created="0"), openai_completion),  # coerced type
        (lambda p: p["usage"].pop("total_tokens"), openai_completion),  # required field
        (lambda p: p.pop("system_fingerprint"), lambda p: hf_dataclass(ChatCompletionOutput, p)),
        (lambda p: p["choices"][0].update(index="0"), lambda p: hf_dataclass(ChatCompletionOutput, p)),
    ],
)
def test_the_checks_catch_a_drifted_fake(drift: Callable[[dict[str, Any]], Any], check: Any) -> None:
    payload = RecordingServer().completion({"model": "m"})
    openai_and_hf_completion(payload)  # the fake as it is passes ...
    drift(payload)
    with pytest.raises((AssertionError, ValueError)):  # ... and fails once drifted (pydantic: ValueError)
        check(payload)


# --------------------------------------------------------------------------- the recording server, on the wire


@pytest.fixture(params=[False, True], ids=["reply", "echo"])
def wire(request: pytest.FixtureRequest) -> Iterator[RecordingServer]:
    with RecordingServer(echo=request.param) as server:
        yield server


ASK = {"model": "m", "messages": [{"role": "user", "content": "héllo, wörld ✓"}]}


def test_recording_server_completion(wire: RecordingServer) -> None:
    resp = httpx.post(f"{wire.url}/v1/chat/completions", json=ASK)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    openai_and_hf_completion(resp.json())


def test_recording_server_stream(wire: RecordingServer) -> None:
    resp = httpx.post(f"{wire.url}/v1/chat/completions", json={**ASK, "stream": True})
    assert resp.headers["content-type"] == "text/event-stream"
    events = sse_events(resp.text)
    assert len(events) >= 3
    for event in events:
        openai_and_hf_chunk(event)
    assert events[-1]["choices"] == [] and events[-1]["usage"]  # include_usage's final chunk


def test_recording_server_azure_route(wire: RecordingServer) -> None:
    url = f"{wire.url}/openai/deployments/d/chat/completions?api-version=2024-10-21"
    openai_and_hf_completion(httpx.post(url, json=ASK).json())


def test_recording_server_anthropic_message(wire: RecordingServer) -> None:
    body = {"model": "claude-3-5-sonnet-latest", "max_tokens": 10, **{"messages": ASK["messages"]}}
    anthropic_message(httpx.post(f"{wire.url}/v1/messages", json=body).json())


@pytest.mark.parametrize(
    "reasoning", [None, {"effort": "low", "summary": "auto"}], ids=["plain", "reasoning"]
)
def test_recording_server_responses_api(wire: RecordingServer, reasoning: dict[str, str] | None) -> None:
    """OpenAI's Responses API: the reply, and the stream as typed events (each under its ``event:`` name,
    no ``[DONE]``), every event one of the SDK's ``ResponseStreamEvent`` types; the events add up to the
    reply."""
    from openai.types.responses import Response, ResponseStreamEvent
    from pydantic import TypeAdapter

    ask = {"model": "o4-mini", "input": ASK["messages"], **({"reasoning": reasoning} if reasoning else {})}
    reply = httpx.post(f"{wire.url}/v1/responses", json=ask).json()
    sdk_model(Response, reply)
    streamed = httpx.post(f"{wire.url}/v1/responses", json={**ask, "stream": True})
    assert streamed.headers["content-type"] == "text/event-stream" and "[DONE]" not in streamed.text
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    names = [
        line.removeprefix("event: ") for line in streamed.text.splitlines() if line.startswith("event: ")
    ]
    events = [
        json.loads(line[len("data: ") :]) for line in streamed.text.splitlines() if line.startswith("data: ")
    ]
    assert names == [e["type"] for e in events] and len(events) > 6
    for event in events:
        sdk_model(type(adapter.validate_python(event)), event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == reply["output"][-1]["content"][0]["text"]
    summary = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta")
    assert summary == ("thought" if reasoning else "")
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["usage"] == reply["usage"]


def test_recording_server_model_list(wire: RecordingServer) -> None:
    listing = httpx.get(f"{wire.url}/v1/models").json()
    assert listing["object"] == "list" and listing["data"]
    for item in listing["data"]:
        sdk_model(OpenAIModelInfo, item)


def test_recording_server_error_bodies() -> None:
    with RecordingServer(fail_rate=1.0) as server:
        server.enqueue(503)  # a scripted status without a body: the server's own error body
        for _ in range(2):  # then the injected failure's
            resp = httpx.post(f"{server.url}/v1/chat/completions", json=ASK)
            assert resp.status_code in (500, 503)
            sdk_model(ErrorObject, resp.json()["error"])


# --------------------------------------------------------------------------- builders in the backend tests


def test_openai_backend_test_fakes() -> None:
    from tests.backends.test_openai import completion_json

    openai_completion(completion_json())
    openai_completion(completion_json("from openai"))
    call = {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"q": "x"}'}}
    openai_completion(completion_json(None, tool_calls=[call]))


def test_tool_call_fakes_every_backend_reads() -> None:
    from tests.backends.test_hf_inference import tool_call_reply
    from tests.backends.test_tools import tool_call_completion

    openai_and_hf_completion(tool_call_completion())
    openai_and_hf_completion(tool_call_completion(arguments={"city": "Oslo"}))
    openai_and_hf_completion(tool_call_reply())


def test_agent_and_secret_test_fakes() -> None:
    from tests.test_agents import completion as agent_completion
    from tests.test_secrets import completion as secret_completion

    openai_completion(agent_completion("Thought: done.\n<code>\nfinal_answer(1)\n</code>"))
    openai_completion(agent_completion(tool_call=("add", {"a": 2, "b": 3})))
    openai_completion(secret_completion("your key is ..."))


def test_anthropic_fake_of_the_litellm_tests() -> None:
    from tests.backends.test_litellm import anthropic_reply

    anthropic_message(anthropic_reply("Hi from claude\n\nmore"))


def test_runner_bench_server_reply() -> None:
    from bench.runner_concurrency import completion

    openai_completion(completion("re: question 1"))


# --------------------------------------------------------------------------- modelfactory serve speaks the same wire


@pytest.mark.server
def test_modelfactory_serve_replies_are_valid_openai() -> None:
    pytest.importorskip("fastapi")
    from modelfactory.messages import ChatMessage, ChatMessageStreamDelta, TokenUsage
    from modelfactory.model import GenerationRequest, Model
    from modelfactory.serve import BackgroundServer, ServerSettings

    # Known gaps against TGI's spec (huggingface_hub's types), left to the serve module: no
    # system_fingerprint, and a role only in the first delta, as OpenAI does (its types make both optional;
    # huggingface_hub's parser tolerates them). Everything else must match both.
    lacks = frozenset({"system_fingerprint", "role"})

    class Served(Model):
        """A backend that reports usage and streams, so every field of the wire has something to carry."""

        def _generate(self, req: GenerationRequest) -> ChatMessage:
            return ChatMessage(content="served reply, in pieces", token_usage=TokenUsage(9, 4))

        def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
            for piece in ("served ", "reply, ", "in pieces"):
                yield ChatMessageStreamDelta(content=piece)
            yield ChatMessageStreamDelta(token_usage=TokenUsage(9, 4))

    model = Served(model_id="echo")
    with BackgroundServer(model, ServerSettings(port=0, log_level="warning")) as url:
        ask = {"model": "echo", "messages": ASK["messages"]}
        reply = httpx.post(f"{url}/v1/chat/completions", json=ask).json()
        sdk_model(ChatCompletion, reply)
        hf_dataclass(ChatCompletionOutput, reply, may_lack=lacks)
        streamed = httpx.post(
            f"{url}/v1/chat/completions",
            json={**ask, "stream": True, "stream_options": {"include_usage": True}},
        )
        for event in sse_events(streamed.text):
            sdk_model(ChatCompletionChunk, event)
            hf_dataclass(ChatCompletionStreamOutput, event, may_lack=lacks)
        for item in httpx.get(f"{url}/v1/models").json()["data"]:
            sdk_model(OpenAIModelInfo, item)


# --------------------------------------------------------------------------- every body a test enqueues

ROOT = Path(__file__).resolve().parents[1]
# Builders checked by name above: a call to one of them is checked through its builder's test.
CHECKED_BUILDERS = {
    "completion",
    "completion_json",
    "tool_call_completion",
    "tool_call_reply",
    "anthropic_reply",
    "tool_calls_stream",  # tests/test_agents.py's scripted streams and replies:
    "text_stream",  # test_agent_scripts_have_openais_shape below
    "reply",
}
# Bodies a test builds in a variable on purpose, by the place they are enqueued, with why they stand.
BUILT_ON_PURPOSE = {
    ("tests/backends/test_openai.py", "body"): "completion_json() with its choices emptied: the fault tested",
    ("tests/backends/test_openai_responses.py", "body"): (
        "the fake's Responses reply with a function call, checked against openai's Response in that test"
    ),
    ("tests/backends/test_openai_responses.py", "_events()"): (
        "the fake's Responses API stream (RecordingServer.response_events), each event checked against "
        "openai's ResponseStreamEvent in that test's _sdk_events()"
    ),
    ("tests/backends/test_openai_responses.py", "_sdk_events()"): (
        "Responses API stream events (an error event, a response.failed, a stream without argument "
        "deltas), each checked against openai's ResponseStreamEvent there"
    ),
    ("tests/test_reasoning.py", "payload"): (
        "_logprob_reply(): an OpenAI reply with logprobs, checked against ChatCompletion in that test"
    ),
    ("tests/test_reasoning.py", "deepseek"): (
        "a reply with DeepSeek's message.reasoning_content, a key OpenAI's ChatCompletion does not have"
    ),
    ("tests/test_cache.py", "chunk()"): (
        "chat.completion.chunk dicts of a streamed tool call (a local helper), as the cache records them"
    ),
    ("tests/test_serve_stream_oracle.py", "sse()"): (
        "raw SSE bytes of an upstream echoing a guess in tool-call argument pieces, as the SDK reads them"
    ),
    ("tests/backends/test_openai.py", "chunks"): (
        "chat.completion.chunk dicts of parallel tool calls; one numbering sends no index on purpose, as "
        "providers that are not OpenAI do"
    ),
    (
        "tests/test_secrets.py",
        "sse",
    ): "raw SSE bytes of tool-call chunks split mid-secret, as the SDK reads them",
}


def _literal(node: ast.expr) -> Any:
    """A literal body, an f-string's holes filled with "x" (the shape is what matters, not the text)."""
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "x" for v in node.values)
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Name):
        return "x"  # a value inside a literal body: a text the test echoes (a secret in an error message)
    return ast.literal_eval(node)


def enqueued_bodies() -> Iterator[tuple[str, ast.expr]]:
    """(file:line, body expression) of every ``.enqueue(...)`` that passes a body, in tests/bench/examples."""
    for path in sorted(
        [*ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/**/*.py"), *ROOT.glob("examples/**/*.py")]
    ):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "enqueue"
            ):
                body = (
                    node.args[1]
                    if len(node.args) > 1
                    else next((k.value for k in node.keywords if k.arg == "body"), None)
                )
                if body is not None:
                    yield f"{path.relative_to(ROOT)}:{node.lineno}", body


def check_provider_body(body: Any) -> str:
    """Checks ``body`` against the shape of the provider it imitates; returns which shape that was."""
    if isinstance(body, (str, bytes)):
        text = body.decode() if isinstance(body, bytes) else body
        if text.startswith("data: "):  # SSE: TGI error events or OpenAI chunks
            for line in text.split("\n\n"):
                if line.strip() and line != "data: [DONE]":
                    check_provider_body(json.loads(line.removeprefix("data: ")))
            return "sse"
        try:  # a str body that is not SSE is there to be unreadable
            json.loads(text)
        except ValueError:
            return "not json"
        raise AssertionError("a str body that parses as JSON: enqueue it as a dict, so it is checked")
    assert isinstance(body, dict), body
    if "error" in body and isinstance(body["error"], dict):
        assert set(body) == {"error"}, "OpenAI's error body has one key"
        sdk_model(ErrorObject, body["error"])
        return "openai error"
    if "error" in body:  # TGI / Hugging Face Inference: {"error": "...", "error_type": "..."}
        assert set(body) == {"error", "error_type"} and all(isinstance(v, str) for v in body.values()), body
        return "tgi error"
    if body.get("type") == "message":
        anthropic_message(body)
        return "anthropic message"
    if body.get("object") == "chat.completion.chunk":
        sdk_model(ChatCompletionChunk, body)
        return "openai chunk"
    openai_completion(body)
    return "openai completion"


def _vouched_for(path: str, node: ast.expr) -> bool:
    """A body from a checked builder, or from a helper listed in BUILT_ON_PURPOSE (``name()``): also
    each branch of ``a if stream else b`` and each element of a list of chunks."""
    if isinstance(node, ast.IfExp):
        return _vouched_for(path, node.body) and _vouched_for(path, node.orelse)
    if isinstance(node, (ast.List, ast.Tuple)):
        return bool(node.elts) and all(_vouched_for(path, e) for e in node.elts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in CHECKED_BUILDERS or (path, node.func.id + "()") in BUILT_ON_PURPOSE
    return False


def test_every_enqueued_body_has_its_providers_shape() -> None:
    shapes: dict[str, int] = {}
    unchecked = []
    for where, node in enqueued_bodies():
        if _vouched_for(where.split(":")[0], node):
            continue
        if isinstance(node, ast.Name):
            assert (where.split(":")[0], node.id) in BUILT_ON_PURPOSE, f"{where}: a body from {node.id}"
            continue
        try:
            body = _literal(node)
        except ValueError:
            unchecked.append(f"{where}: {ast.unparse(node)[:80]}")
            continue
        try:
            shape = check_provider_body(body)
        except (AssertionError, ValueError) as exc:
            raise AssertionError(f"{where}: {exc}") from exc
        shapes[shape] = shapes.get(shape, 0) + 1
    assert unchecked == [], "bodies this test cannot read (use a literal or a checked builder)"
    assert shapes["openai error"] >= 45 and shapes["tgi error"] >= 3, shapes  # it did find them


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "slow down"}},  # no type: what 45 of them were
        {"error": {"message": "x", "type": "server_error", "status": 500}},  # a key OpenAI does not send
        {"error": "overloaded"},  # TGI's without its error_type
        {"error": {"message": "x", "type": "server_error"}, "detail": "x"},
        "data: " + json.dumps({"error": "x"}) + "\n\n",
        '{"valid": "json"}',  # a str body that parses: it should have been a dict
    ],
)
def test_the_enqueued_body_check_catches_a_wrong_shape(body: Any) -> None:
    with pytest.raises((AssertionError, ValueError)):
        check_provider_body(body)


# --------------------------------------------------------------------------- the batch APIs' fakes


def _anthropic_error_types() -> set[str]:
    """Every error type the anthropic SDK knows (the discriminator values of its ErrorObject union)."""
    from anthropic.types import ErrorObject as AnthropicErrorObject

    (union, *_) = typing.get_args(AnthropicErrorObject)
    return {typing.get_args(cls.model_fields["type"].annotation)[0] for cls in typing.get_args(union)}


def test_anthropic_batch_fake_speaks_the_sdks_types() -> None:
    """Batches in progress, ended (every result type, every error type) and cancelled, and the fake's
    own error replies: each validated strictly against the anthropic SDK's models."""
    from anthropic.types import ErrorResponse
    from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

    from tests.servers.anthropic_batches import ERROR_MESSAGES, AnthropicBatchServer

    assert set(ERROR_MESSAGES) == _anthropic_error_types()  # every type the SDK knows, and no other
    ask = {"model": "claude-test", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
    with AnthropicBatchServer() as server, httpx.Client(base_url=server.url, headers=headers) as client:
        server.outcomes = {f"e-{k.replace('_', '-')}": f"errored:{k}" for k in ERROR_MESSAGES}
        server.outcomes["gone"] = "expired"
        requests = [{"custom_id": cid, "params": ask} for cid in [*server.outcomes, "fine"]]
        server.hold.clear()
        created = client.post("/v1/messages/batches", json={"requests": requests}).json()
        sdk_model(MessageBatch, created)
        assert created["processing_status"] == "in_progress"
        server.hold.set()
        ended = client.get(f"/v1/messages/batches/{created['id']}").json()
        sdk_model(MessageBatch, ended)
        results = [json.loads(line) for line in client.get(ended["results_url"]).text.splitlines()]
        for result in results:
            sdk_model(MessageBatchIndividualResponse, result)
        assert {r["result"]["type"] for r in results} == {"succeeded", "errored", "expired"}
        server.hold.clear()
        other = client.post("/v1/messages/batches", json={"requests": requests[-1:]}).json()
        cancelled = client.post(f"/v1/messages/batches/{other['id']}/cancel").json()
        sdk_model(MessageBatch, cancelled)
        (result,) = [json.loads(line) for line in client.get(cancelled["results_url"]).text.splitlines()]
        sdk_model(MessageBatchIndividualResponse, result)
        assert result["result"] == {"type": "canceled"}
        refusals = [
            client.get("/v1/messages/batches/msgbatch_none"),
            client.post("/v1/messages/batches", json={"requests": []}),
            client.get(f"/v1/messages/batches/{created['id']}", headers={"x-api-key": "wrong"}),
        ]
        assert [r.status_code for r in refusals] == [404, 400, 401]
        for refusal in refusals:
            sdk_model(ErrorResponse, refusal.json())


def test_openai_batch_fake_speaks_the_sdks_types() -> None:
    """The uploaded file, the batch as created and as completed, every output line's completion, and the
    fake's own error replies, against the openai SDK's models (its client.files / client.batches read
    them in tests/test_batch.py, but a lenient parse proves nothing about unknown or coerced keys)."""
    from openai.types import Batch, FileObject

    from tests.servers.openai_batches import BatchAPIServer

    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    headers = {"authorization": "Bearer sk-fake"}
    with BatchAPIServer() as server, httpx.Client(base_url=server.url, headers=headers) as client:
        server.hold.clear()
        upload = {"file": ("in.jsonl", json.dumps(line).encode())}
        uploaded = client.post("/v1/files", files=upload, data={"purpose": "batch"}).json()
        sdk_model(FileObject, uploaded)
        ask = {
            "input_file_id": uploaded["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        created = client.post("/v1/batches", json=ask).json()
        sdk_model(Batch, created)
        server.hold.set()
        done = client.get(f"/v1/batches/{created['id']}").json()
        sdk_model(Batch, done)
        assert done["status"] == "completed"
        (row,) = [
            json.loads(x) for x in client.get(f"/v1/files/{done['output_file_id']}/content").text.splitlines()
        ]
        assert set(row) == {"id", "custom_id", "response", "error"} and row["error"] is None  # OpenAI's line
        assert set(row["response"]) == {"status_code", "request_id", "body"}
        openai_completion(row["response"]["body"])
        refusals = [
            client.get("/v1/batches/batch_none"),
            client.post("/v1/batches", json={**ask, "completion_window": "1h"}),
            client.get(f"/v1/batches/{created['id']}", headers={"authorization": "Bearer wrong"}),
        ]
        assert [r.status_code for r in refusals] == [404, 400, 401]
        for refusal in refusals:
            assert set(refusal.json()) == {"error"}
            sdk_model(ErrorObject, refusal.json()["error"])


@pytest.mark.parametrize(
    "reasoning", [None, {"effort": "high", "summary": "auto"}], ids=["plain", "reasoning"]
)
def test_openai_batch_fake_answers_responses_lines_as_the_sdk_types_them(
    reasoning: dict[str, str] | None,
) -> None:
    """A ``/v1/responses`` batch (what ``OpenAIResponsesModel`` submits): each output line's body a strict ``openai.types.responses.Response``; a line whose url is not the batch's is refused."""
    from openai import OpenAI
    from openai.types.responses import Response

    from tests.servers.openai_batches import BatchAPIServer

    body = {"model": "o4-mini", "input": ASK["messages"], **({"reasoning": reasoning} if reasoning else {})}
    line = {"custom_id": "a", "method": "POST", "url": "/v1/responses", "body": body}
    with BatchAPIServer() as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
        up = client.files.create(file=("in.jsonl", json.dumps(line).encode()), purpose="batch")
        made = client.batches.create(input_file_id=up.id, endpoint="/v1/responses", completion_window="24h")
        done = client.batches.retrieve(made.id)
        assert (done.status, done.endpoint) == ("completed", "/v1/responses")
        assert done.output_file_id is not None
        (row,) = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
        sdk_model(Response, row["response"]["body"])
        kinds = [item["type"] for item in row["response"]["body"]["output"]]
        assert kinds == (["reasoning", "message"] if reasoning else ["message"])
        chat = {**line, "url": "/v1/chat/completions"}
        up = client.files.create(file=("in.jsonl", json.dumps(chat).encode()), purpose="batch")
        refused = httpx.post(
            f"{server.url}/v1/batches",
            json={"input_file_id": up.id, "endpoint": "/v1/responses", "completion_window": "24h"},
            headers={"authorization": f"Bearer {server.api_key}"},
        )
        assert refused.status_code == 400 and "url /v1/responses" in refused.json()["error"]["message"]


def test_openai_batch_fake_lists_and_keeps_metadata_as_the_sdk_reads_them() -> None:
    """Batches (with ``metadata``) and their cursor-paged list, as ``openai.types.Batch`` and the SDK's
    own ``client.batches.list`` (auto-paging on ``has_more`` / ``after``) read them; the files list too."""
    from openai import OpenAI
    from openai.types import Batch, FileObject

    from tests.servers.openai_batches import BatchAPIServer

    with BatchAPIServer() as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
        line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": ASK}
        made = []
        for tag in ("first", "second"):
            up = client.files.create(file=("in.jsonl", json.dumps(line).encode()), purpose="batch")
            made.append(
                client.batches.create(
                    input_file_id=up.id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                    metadata={"tag": tag},
                ).id
            )
        page = httpx.get(
            f"{server.url}/v1/batches?limit=1", headers={"authorization": "Bearer sk-fake"}
        ).json()
        assert set(page) == {"object", "data", "first_id", "last_id", "has_more"} and page["has_more"] is True
        for item in page["data"]:
            sdk_model(Batch, item)
        listed = list(client.batches.list(limit=1))  # two pages, newest first
        assert [b.id for b in listed] == made[::-1]
        assert [b.metadata for b in listed] == [{"tag": "second"}, {"tag": "first"}]
        files = httpx.get(f"{server.url}/v1/files?purpose=batch", headers={"authorization": "Bearer sk-fake"})
        for item in files.json()["data"]:
            sdk_model(FileObject, item)
        assert [f.filename for f in client.files.list(purpose="batch")] == ["in.jsonl", "in.jsonl"]


def test_anthropic_batch_fake_lists_as_the_sdk_reads_it() -> None:
    """Message Batches and their list (newest first, ``after_id`` paging), as ``anthropic.types.messages.
    MessageBatch`` and the SDK's own ``client.messages.batches.list`` read them."""
    from anthropic import Anthropic
    from anthropic.types.messages import MessageBatch

    from tests.servers.anthropic_batches import AnthropicBatchServer

    with AnthropicBatchServer() as server:
        # this SDK sends the key as a bearer token; the fake checks the documented x-api-key header
        key = {"x-api-key": server.api_key}
        client = Anthropic(base_url=server.url, api_key=server.api_key, max_retries=0, default_headers=key)
        params = {"model": "claude-test", "max_tokens": 8, "messages": ASK["messages"]}
        made = [
            client.messages.batches.create(requests=[{"custom_id": f"r{i}", "params": params}]).id  # type: ignore[list-item]
            for i in range(2)
        ]
        headers = {"x-api-key": server.api_key, "anthropic-version": "2023-06-01"}
        page = httpx.get(f"{server.url}/v1/messages/batches?limit=1", headers=headers).json()
        assert set(page) == {"data", "has_more", "first_id", "last_id"} and page["has_more"] is True
        for item in page["data"]:
            sdk_model(MessageBatch, item)
        assert [b.id for b in client.messages.batches.list(limit=1)] == made[::-1]


def test_agent_scripts_have_openais_shape() -> None:
    """The streams and replies tests/test_agents.py scripts for its agents, against the SDK's types."""
    from tests.test_agents import reply, text_stream, tool_calls_stream

    calls = [("call_0", "search", {"q": "paris"}), ("call_1", "lookup", {"id": 3})]
    for body in [*tool_calls_stream(calls), *text_stream("The answer is 42.")]:
        assert check_provider_body(body) == "openai chunk"
    for body in (reply("done"), reply(calls=calls)):
        assert check_provider_body(body) == "openai completion"
