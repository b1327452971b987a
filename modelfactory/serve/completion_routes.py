"""``/v1/completions`` and ``/v1/embeddings`` for local models.

lm-eval's ``local-completions`` scores loglikelihood and multiple-choice tasks through the legacy
completions route: ``echo`` + ``logprobs`` (and ``max_tokens`` 0 or 1) give the log-probability of every
prompt token. Embeddings are what retrieval code asks an OpenAI-compatible server for. Both are answered
by the model's ``complete_text`` / ``embed`` (:mod:`modelfactory.backends._completion`); a model without
them (an API backend) gets a 400 saying so.

Imported only by :func:`.app.create_app`, once fastapi is known to be installed.
"""

import asyncio
import base64
import json
import struct
import time
import uuid
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from ..secrets import scrub_tree
from .protocol import HTTPError, error_for, validation_error
from .routes import _authorized, receive_body
from .state import ServeState

__all__ = ["CompletionRequest", "EmbeddingRequest", "install"]

Prompt = StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


class CompletionRequest(BaseModel):
    """The legacy completions parameters this server reads (strict, as the chat route's)."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr | None = None
    prompt: Prompt
    max_tokens: StrictInt | None = Field(16, ge=0)  # OpenAI's default; 0 scores the prompt only
    stop: StrictStr | list[StrictStr] | None = None
    echo: StrictBool = False
    logprobs: StrictInt | None = Field(None, ge=0, le=20)
    temperature: StrictFloat | None = Field(None, ge=0.0, le=2.0)
    top_p: StrictFloat | None = Field(None, gt=0.0, le=1.0)
    seed: StrictInt | None = Field(None, ge=0, lt=2**63)
    n: StrictInt | None = Field(None, ge=1)
    best_of: StrictInt | None = Field(None, ge=1)
    stream: StrictBool = False
    suffix: StrictStr | None = None

    def prompts(self) -> list[str | list[int]]:
        """One entry per completion: a string, a list of strings, token ids, or a list of those."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [cast(list[int], p)]
        return list(cast(list[Any], p))


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr | None = None
    input: Prompt
    encoding_format: StrictStr = "float"
    dimensions: StrictInt | None = None

    def inputs(self) -> list[str | list[int]]:
        p = self.input
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [cast(list[int], p)]
        return list(cast(list[Any], p))


def install(app: FastAPI) -> None:
    app.add_api_route("/v1/completions", completions, methods=["POST"])
    app.add_api_route("/v1/embeddings", embeddings, methods=["POST"])


def _parse(model_cls: type[BaseModel], body: bytes) -> Any:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise HTTPError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise HTTPError(
            400, f"the body must be a JSON object, got {type(data).__name__}", code="invalid_json"
        )
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _unsupported(param: str, message: str) -> HTTPError:
    return HTTPError(400, message, param=param, code="unsupported")


def _check_model(state: ServeState, name: str | None, method: str) -> Any:
    if name is not None and not state.serves(name):
        raise HTTPError(
            404,
            f"the model '{name}' does not exist: this server serves {state.described()}",
            param="model",
            code="model_not_found",
        )
    fn = getattr(state.model, method, None)
    if not callable(fn):
        what = "text completions" if method == "complete_text" else "embeddings"
        raise _unsupported(
            "model",
            f"the served model ({type(state.model).__name__}) does not do {what}: this route serves local "
            "models (TransformersModel, LlamaCppModel); use /v1/chat/completions",
        )
    return fn


async def completions(request: Request) -> Any:
    state = _authorized(request)
    req: CompletionRequest = _parse(
        CompletionRequest, await receive_body(state, request, state.settings.max_body_bytes)
    )
    fn = _check_model(state, req.model, "complete_text")
    if req.stream:
        raise _unsupported("stream", "stream is not supported on /v1/completions: send stream false")
    if req.suffix:
        raise _unsupported("suffix", "suffix (insertion) is not supported: send the prompt only")
    if (req.n or 1) > 1 or (req.best_of or 1) > 1:
        raise _unsupported("n", "n > 1 and best_of > 1 are not supported: send one request per completion")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > state.settings.max_stop_sequences:
        raise HTTPError(400, f"stop: at most {state.settings.max_stop_sequences} sequences", param="stop")
    prompts = req.prompts()
    if not prompts:
        raise HTTPError(400, "prompt: empty", param="prompt", code="invalid_value")
    kwargs = {
        "max_tokens": 16 if req.max_tokens is None else req.max_tokens,
        "stop": stop,
        "echo": req.echo,
        "logprobs": req.logprobs,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
    }

    def run() -> list[Any]:
        return [fn(p, **kwargs) for p in prompts]

    try:
        results = await asyncio.get_running_loop().run_in_executor(state.dispatcher.pool, run)
    except Exception as exc:
        raise error_for(exc, state.is_local, state.redactor()) from None
    prompt_tokens = sum(r.prompt_tokens for r in results)
    completion_tokens = sum(r.completion_tokens for r in results)
    body = {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": state.name,
        "choices": [
            {
                "index": i,
                "text": r.text,
                "logprobs": r.logprobs.body() if r.logprobs is not None else None,
                "finish_reason": r.finish_reason,
            }
            for i, r in enumerate(results)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": None,
    }
    return JSONResponse(scrub_tree(body, state.redactor()))


async def embeddings(request: Request) -> Any:
    state = _authorized(request)
    req: EmbeddingRequest = _parse(
        EmbeddingRequest, await receive_body(state, request, state.settings.max_body_bytes)
    )
    fn = _check_model(state, req.model, "embed")
    if req.encoding_format not in ("float", "base64"):
        raise HTTPError(
            400, "encoding_format must be 'float' or 'base64'", param="encoding_format", code="invalid_value"
        )
    if req.dimensions is not None:
        raise _unsupported("dimensions", "dimensions is not supported: the vectors have the model's width")
    inputs = req.inputs()
    if not inputs:
        raise HTTPError(400, "input: empty", param="input", code="invalid_value")
    try:
        result = await asyncio.get_running_loop().run_in_executor(state.dispatcher.pool, fn, inputs)
    except Exception as exc:
        raise error_for(exc, state.is_local, state.redactor()) from None
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
        for i, v in enumerate(result.vectors)
    ]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": state.name,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }
    )


def _encode(vector: list[float], fmt: str) -> Any:
    """``float``: the list; ``base64``: little-endian float32s, as OpenAI sends (the openai SDK asks for it)."""
    if fmt == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
