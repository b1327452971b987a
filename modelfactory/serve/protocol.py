"""The OpenAI chat-completions wire, server side: the request this server reads, its errors, and the
JSON bodies and SSE chunks it answers with. No HTTP framework here: the routes hand it bytes and models."""

import contextlib
import json
import logging
import traceback
from collections.abc import Callable
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from ..errors import (
    BackendError,
    ConfigError,
    ContextLengthError,
    MessageError,
    ModelFactoryError,
    UnsupportedFeatureError,
)
from ..generation import generation_problems
from ..messages import ChatMessage, TokenLogprob

__all__ = [
    "DONE",
    "ChatCompletionRequest",
    "HTTPError",
    "StreamChunks",
    "body_too_large",
    "completion_body",
    "context_length_exceeded",
    "error_for",
    "finish_reason",
    "logprobs_body",
    "parse_request",
    "stream_finish_reason",
    "stream_tool_calls",
    "tool_calls_body",
    "usage_body",
    "validation_error",
]

log = logging.getLogger("modelfactory.serve")

DONE = b"data: [DONE]\n\n"


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    """The parameters of a chat completion this server reads; others are accepted and ignored.

    The scalars are strict, as OpenAI's own API is: ``temperature: true``, ``max_tokens: "8"`` and
    ``stream: "yes"`` are 400s naming the field, never coerced (a client with a bug learns of it here,
    not from replies that quietly differ from what it meant). A whole number is a float."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: StrictStr | list[StrictStr] | None = None
    max_tokens: StrictInt | None = Field(None, gt=0)
    max_completion_tokens: StrictInt | None = Field(None, gt=0)
    temperature: StrictFloat | None = Field(None, ge=0.0, le=2.0)
    top_p: StrictFloat | None = Field(None, gt=0.0, le=1.0)
    seed: StrictInt | None = None
    n: StrictInt | None = Field(None, ge=1)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)
    _size: int = PrivateAttr(0)  # the body's bytes: which prep threads prepare it

    @property
    def size(self) -> int:
        return self._size

    def output_format(self) -> dict[str, Any] | None:
        """``response_format`` as the model takes it: ``{"type": "text"}`` (OpenAI's default, what many
        clients always send) asks for nothing, so it is no format at all, not a 400 on a model that
        constrains no output."""
        fmt = self.response_format
        if fmt is not None and fmt.get("type") == "text" and set(fmt) <= {"type"}:
            return None
        return fmt

    def params(self) -> dict[str, Any]:
        """Per-call generation kwargs for ``model.generate``."""
        out = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "seed": self.seed,
        }
        if self.logprobs:  # the model scores its reply's tokens with the call (ChatMessage.logprobs)
            out.update(logprobs=True, top_logprobs=self.top_logprobs)
        return {k: v for k, v in out.items() if v is not None}


class HTTPError(Exception):
    """An error answered with ``status`` and an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}


def validation_error(exc: ValidationError) -> HTTPError:
    parts = []
    first_param = None
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        first_param = first_param or (str(err["loc"][0]) if err["loc"] else None)
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return HTTPError(400, "invalid request: " + "; ".join(parts), param=first_param, code="invalid_value")


def error_for(exc: BaseException, is_local: bool, redact: Callable[[str], str] = str) -> HTTPError:
    """A model's exception as an HTTP error (4xx for the caller's mistakes, 5xx for the model's), its text
    (and the log line of an unexpected one) passed through ``redact``: an upstream's error may echo the
    key this server holds for it, which a client must never see."""
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(
        exc, ContextLengthError
    ):  # a local model's own context check (modelfactory.backends._local)
        return context_length_exceeded(exc.context, exc.prompt_tokens, exc.max_tokens)
    if isinstance(exc, (MessageError, UnsupportedFeatureError, ConfigError)):
        return HTTPError(
            400, redact(str(exc)), code="unsupported" if isinstance(exc, UnsupportedFeatureError) else None
        )
    if isinstance(exc, BackendError):
        status = exc.status if isinstance(exc.status, int) and 400 <= exc.status < 600 else None
        if status is None or status == 401 or status == 403:  # the upstream's auth is ours, not the caller's
            status = 500 if is_local else 502
        return HTTPError(
            status, redact(str(exc)), type="server_error" if status >= 500 else "invalid_request_error"
        )
    if isinstance(exc, ModelFactoryError):
        return HTTPError(500, redact(str(exc)), type="server_error")
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log.error("unexpected error: %s", redact(trace))
    return HTTPError(500, f"internal error: {type(exc).__name__}", type="server_error")


# --------------------------------------------------------------------------- replies and stream chunks


def finish_reason(reply: ChatMessage, max_tokens: int | None) -> str:
    if reply.tool_calls:
        return "tool_calls"
    raw = reply.raw
    reason = raw.get("finish_reason") if isinstance(raw, dict) else None
    if reason is None:
        with contextlib.suppress(Exception):
            reason = raw.choices[0].finish_reason  # type: ignore[union-attr]
    if isinstance(reason, str) and reason:
        return reason
    usage = reply.token_usage
    if usage is not None and max_tokens is not None and usage.output_tokens >= max_tokens:
        return "length"
    return "stop"


def usage_body(usage: Any, raw: Any = None, stream: bool = False) -> dict[str, Any] | None:
    if usage is None:
        return None
    out: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
    cached = getattr(usage, "cached_input_tokens", 0) or None  # an upstream provider's prompt cache
    if cached is None and isinstance(raw, dict):
        cached = raw.get("cached_prompt_tokens")
    if isinstance(cached, int):  # a local model's prompt cache: reported where OpenAI reports its own
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    elif stream:  # a stream's usage always says, as OpenAI's does (Inspect reads it): 0 when none came
        out["prompt_tokens_details"] = {"cached_tokens": 0}
    return out


def tool_calls_body(reply: ChatMessage) -> list[dict[str, Any]] | None:
    if not reply.tool_calls:
        return None
    return [
        {
            "id": tc.id,
            "type": "function",
            "function": {
                "name": tc.function.name,
                "arguments": tc.function.arguments
                if isinstance(tc.function.arguments, str)
                else json.dumps(tc.function.arguments),
            },
        }
        for tc in reply.tool_calls
    ]


def stream_tool_calls(calls: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, tc in enumerate(calls):
        if isinstance(tc, dict):
            out.append({"index": i, **tc})
            continue
        fn = getattr(tc, "function", None)
        out.append(
            {
                "index": getattr(tc, "index", i),
                "id": getattr(tc, "id", None),
                "type": "function",
                "function": {"name": getattr(fn, "name", None), "arguments": getattr(fn, "arguments", None)},
            }
        )
    return out


def context_length_exceeded(
    context: int, prompt: int | None, completion: int | None, what: str = "the messages"
) -> HTTPError:
    """OpenAI's 400 for a prompt (plus the asked completion) longer than the model's context; ``what``:
    what was measured when ``prompt`` (a token count) is not known."""
    if prompt is None:
        detail = f"{what} alone are far longer than that"
    else:
        asked = prompt + (completion or 0)
        detail = (
            f"you requested {asked} tokens ({prompt} in the messages, {completion or 0} in the completion)"
        )
    return HTTPError(
        400,
        f"This model's maximum context length is {context} tokens. However, {detail}. "
        "Please reduce the length of the messages or completion.",
        param="messages",
        code="context_length_exceeded",
    )


def body_too_large(limit: int) -> HTTPError:
    return HTTPError(413, f"request body over {limit} bytes (server.max_body_bytes)", code="body_too_large")


def parse_request(body: bytes | bytearray) -> ChatCompletionRequest:
    """The request body as a :class:`ChatCompletionRequest`, or the 400 that says what is wrong with it."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise HTTPError(400, "the body is not valid JSON: nested too deeply", code="invalid_json") from None
    except ValueError as exc:
        raise HTTPError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    try:  # "\ud800" is valid JSON but no text: no tokenizer or provider can encode a lone surrogate
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise HTTPError(400, "the body is not valid JSON: nested too deeply", code="invalid_json") from None
    except UnicodeEncodeError:
        raise HTTPError(
            400, "the body holds a lone UTF-16 surrogate (e.g. \\ud800): not valid text", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise HTTPError(
            400, f"the body must be a JSON object, got {type(data).__name__}", code="invalid_json"
        )
    try:
        req = ChatCompletionRequest.model_validate(data)
    except RecursionError:
        raise HTTPError(400, "invalid request: nested too deeply", code="invalid_value") from None
    except ValidationError as exc:
        raise validation_error(exc) from None
    problems = generation_problems(req.params(), prefix="")
    if problems:
        text = "; ".join(f"{p.key}: {p.problem}" for p in problems)
        raise HTTPError(400, f"invalid request: {text}", param=problems[0].key, code="invalid_value")
    req._size = len(body)
    return req


def completion_body(
    cid: str, created: int, name: str, reply: ChatMessage, max_tokens: int | None
) -> dict[str, Any]:
    """A whole ``chat.completion`` object for ``reply``."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    calls = tool_calls_body(reply)
    if calls:
        message["tool_calls"] = calls
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(reply, max_tokens),
            }
        ],
        "usage": usage_body(reply.token_usage, reply.raw),
        "system_fingerprint": None,
    }


def logprobs_body(logprobs: list[TokenLogprob]) -> dict[str, Any]:
    """A reply's ``ChatMessage.logprobs`` as OpenAI's chat ``choices[].logprobs``: ``content`` holds each
    token with its log-probability, UTF-8 bytes and ``top_logprobs`` alternatives."""

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    content = [
        {**entry(t.token, t.logprob), "top_logprobs": [entry(tok, lp) for tok, lp in t.top]} for t in logprobs
    ]
    return {"content": content, "refusal": None}


class StreamChunks:
    """The SSE events of one streamed completion: ``chat.completion.chunk`` objects sharing one id."""

    def __init__(self, cid: str, created: int, name: str, include_usage: bool) -> None:
        self.base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name}
        self.include_usage = include_usage

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {
            **self.base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:  # OpenAI sends usage: null on every chunk but the last when asked for usage
            body["usage"] = None
        return _event(body)

    def usage(self, usage: Any) -> bytes:
        """The last chunk when ``stream_options.include_usage``: no choices, the usage of the whole reply."""
        return _event({**self.base, "choices": [], "usage": usage_body(usage, stream=True)})

    @staticmethod
    def error(err: HTTPError) -> bytes:
        """An error after the headers went out: an event, as OpenAI sends them."""
        return _event(err.body)


def stream_finish_reason(tool_calls: bool, usage: Any, max_tokens: int | None) -> str:
    if tool_calls:
        return "tool_calls"
    if usage is not None and max_tokens is not None and usage.output_tokens >= max_tokens:
        return "length"
    return "stop"


def _event(body: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(body)}\n\n".encode()
