"""The ``Model`` base class: one call contract for every backend.

A backend only implements ``_generate`` (and ``_generate_stream`` where it can stream); this class
owns what must be identical everywhere: message normalisation, per-call kwargs over configured
defaults, the stop-sequence contract, feature checks, error wrapping, and the retry policy and rate
limit (``retry``, ``requests_per_minute``; see :mod:`modelfactory.retry`). A backend marks its errors
``retryable`` (API backends: by exception class and HTTP status); local models' errors never are, so
for them the policy is a no-op. A stream is retried only until it yields its first delta.

The asyncio calls (``agenerate``, ``agenerate_stream``) are the same contract over the same hooks,
inherited from :class:`modelfactory._model_async.AsyncCalls`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ._model_async import AsyncCalls
from ._signature import SpecSignature, bind_arguments, document
from ._smolagents_attrs import SmolagentsAttributes
from .cache import StreamRecorder, get_store, replay_deltas, request_key
from .capabilities import spec_capabilities
from .errors import BackendError, CacheMissError, DataError, ModelFactoryError, UnsupportedFeatureError
from .generation import validate_generation
from .messages import (
    ChatMessage,
    ChatMessageStreamDelta,
    GenerationRequest,
    StreamShaper,
    ToolCall,
    ToolCallFunction,
    normalize_messages,
    normalize_stop_sequences,
    trim_at_stop,
)
from .ratelimit import RateLimiter
from .reasoning import apply_reasoning
from .retry import call_with_retry, is_retryable_status
from .secrets import REDACTED, redact_env, scrub, scrub_tree
from .settings import ModelSpec
from .tools import tool_to_schema

if TYPE_CHECKING:
    from ._batchapi import BatchAdapter

T = TypeVar("T")

# The tool_choice sent with tools when neither the call nor the config names one: smolagents' default.
DEFAULT_TOOL_CHOICE = "required"

__all__ = ["GenerationRequest", "Model", "runs_locally", "tool_to_schema"]


def _is_redacted(value: Any) -> bool:
    return isinstance(value, str) and value == REDACTED


def runs_locally(model: Any) -> bool:
    """``model.is_local`` for anything a caller may hold: a :class:`Model`, or a plain callable or
    third-party object (not local unless it says so with a boolean ``is_local``)."""
    flag = getattr(model, "is_local", False)
    return flag if isinstance(flag, bool) else False


def tool_call_id(message: ChatMessage, text: str) -> str:
    """The id of a tool call parsed from a reply's text: derived from the prompt (when the backend keeps
    it in ``raw``) and the reply, not random. An agent writes the id back into its next prompt
    ("Calling tools: [{'id': ...}]"), so a random one made a greedy local agent's next step see other
    tokens on every run, and flip near ties: the same agent run on the same model gave different
    answers. Distinct per step all the same: each step's prompt holds the steps before it."""
    raw = message.raw if isinstance(message.raw, dict) else {}
    prompt = raw.get("prompt")
    seed = f"{prompt if isinstance(prompt, str) else ''}\x00{text}"
    return "call_" + hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:12]


class Model(SmolagentsAttributes, AsyncCalls):
    """Base of every adapter. Build with the main argument (``model_id``) and keyword args, validated by
    ``Spec``; call with messages.

    What a backend may declare or override, all of it here (the "backend hooks" section below):

    - declarations: ``Spec``, ``supports_grammar`` / ``supports_response_format`` / ``supports_tools``,
      ``is_local``, ``batch_uses_cache``, ``batch_seeds_per_row``, ``best_for``;
    - generation: ``_generate`` (required), ``_generate_stream``, ``_agenerate``, ``_agenerate_stream``;
    - lifecycle: ``load``;
    - provider batch endpoint (``runner.provider_batch``): ``batch_adapter``;
    - errors: ``_translate`` (its SDK's exceptions -> ``BackendError``, built with
      :mod:`modelfactory.backends._api` by the API backends), ``_endpoint``, ``_auth_hint``;
    - secrets and identity: ``secret_values``, ``cache_identity``, ``to_dict``.

    One capability is a method only the backends that have it define, since callers test for its
    presence: ``generate_batch(conversations, **kwargs) -> list[ChatMessage]`` (several conversations
    in one forward pass; the runner and ``modelfactory serve`` use it when it is there).
    """

    Spec: ClassVar[type[ModelSpec]] = ModelSpec
    supports_grammar: ClassVar[bool] = False
    supports_response_format: ClassVar[bool] = False
    supports_tools: ClassVar[bool] = False
    # The constructor's real signature, derived from Spec (inspect.signature, help(), notebooks).
    __signature__ = SpecSignature()
    # The model runs in this process (weights loaded here, not a remote API): callers never call it from
    # several threads at once (the runner goes one item, or one batch, at a time), and its failures are
    # our own (``modelfactory serve`` answers 500, not 502 Bad Gateway). Read it with :func:`runs_locally`.
    is_local: ClassVar[bool] = False
    # generate_batch looks each row up in the response cache itself, so a caller may batch a model whose
    # cache is on (otherwise it must call one item at a time for the cache to see each request).
    batch_uses_cache: ClassVar[bool] = False
    # generate_batch takes ``seeds`` (one per row) and samples each row from its own generator, so
    # a seeded row's reply does not depend on its batch-mates (``modelfactory serve`` batches seeded
    # sampled requests only for such a model).
    batch_seeds_per_row: ClassVar[bool] = False
    # Which jobs to pick this backend for, and what to pick instead for the others: one line that
    # ``modelfactory check`` prints for a config using it (the local backends say it; "" says nothing).
    best_for: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        document(cls)

    def __init__(self, /, *args: Any, **kwargs: Any) -> None:
        kwargs = bind_arguments(type(self), args, kwargs)
        self.spec = self.Spec.from_kwargs(kwargs, owner=type(self).__name__)
        rpm = self.spec.requests_per_minute
        # One limiter per model object, shared by every thread (and task) that calls it.
        self._limiter: RateLimiter | None = RateLimiter(rpm) if rpm else None

    # ------------------------------------------------------------------ identity

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    def cache_identity(self) -> dict[str, Any]:
        """What decides this model's replies, for the response-cache key (with the request itself).

        By default the spec's :meth:`~modelfactory.settings.ModelSpec.cache_identity`; a backend whose
        replies depend on something outside its spec adds it here. Credentials never belong in it: the
        same request with another key must hit (the cache drops secret-named keys anyway)."""
        return self.spec.cache_identity()

    def to_dict(self) -> dict[str, Any]:
        """The model's config with secrets redacted: safe for results, logs and ``repr``."""
        cls = type(self)
        return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **self.spec.redacted()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Model:
        """The model :meth:`to_dict` describes (smolagents' ``Model.from_dict``): redacted secrets are left
        unset, so they come from the environment again, as the config's env fallbacks say."""
        kwargs = {k: v for k, v in data.items() if k != "_target_" and not _is_redacted(v)}
        return cls(**kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r})"

    # ------------------------------------------------------------------ the call contract

    def _request(
        self,
        messages: Any,
        stop_sequences: Any,
        grammar: Any,
        response_format: Any,
        tools_to_call_from: Any,
        kwargs: dict[str, Any],
    ) -> GenerationRequest:
        spec = self.spec
        name = type(self).__name__
        if grammar is not None and not self.supports_grammar:
            raise UnsupportedFeatureError(
                f"{name} cannot constrain output with `grammar`; use a backend that takes it "
                "(e.g. HfApiModel on a TGI endpoint) or drop the argument"
            )
        if response_format is not None and not self.supports_response_format:
            raise UnsupportedFeatureError(
                f"{name} does not support `response_format`; use an API backend that does or drop it"
            )
        tools = None
        if tools_to_call_from:
            if not self.supports_tools:
                raise UnsupportedFeatureError(f"{name} does not support native tool calling")
            tools = [tool_to_schema(t) for t in tools_to_call_from]
        params = spec.generation_defaults()
        # tool_choice: the call's, even None (= send none, as in smolagents), else the configured one (in
        # generation_kwargs, or a backend's own `tool_choice` field), else "required" (what smolagents
        # sends: an agent's step is a tool call); only with tools
        configured_choice = params.pop("tool_choice", None)
        if configured_choice is None:
            configured_choice = getattr(spec, "tool_choice", None) or DEFAULT_TOOL_CHOICE
        kwargs = dict(kwargs)
        tool_choice = kwargs.pop("tool_choice") if "tool_choice" in kwargs else configured_choice
        # per-call values checked like the config's (one definition: modelfactory.generation)
        params.update(validate_generation(kwargs, prefix=""))
        effort = params.get("reasoning_effort", getattr(spec, "reasoning_effort", None))
        params = apply_reasoning(spec, params)  # the effort in the provider's terms (modelfactory.reasoning)
        caps = spec_capabilities(spec, effort)  # what the provider accepts (modelfactory.capabilities)
        params = caps.apply(params)  # rejected sampling parameters dropped, max_tokens renamed
        return GenerationRequest(
            messages=normalize_messages(
                messages,
                role_conversions=spec.custom_role_conversions,
                flatten_messages_as_text=spec.flatten_messages_as_text,
            ),
            stop_sequences=normalize_stop_sequences(stop_sequences),
            send_stop=caps.stop,
            params=params,
            grammar=grammar,
            response_format=response_format,
            tools=tools,
            tool_choice=tool_choice if tools else None,
        )

    def generate(
        self,
        messages: Any,
        stop_sequences: list[str] | None = None,
        response_format: Any = None,
        tools_to_call_from: list[Any] | None = None,
        grammar: Any = None,
        **kwargs: Any,
    ) -> ChatMessage:
        """Run one chat completion. Per-call ``kwargs`` override the configured defaults."""
        req = self._request(messages, stop_sequences, grammar, response_format, tools_to_call_from, kwargs)
        cached = self._cache_lookup(req)  # before the retry policy and rate limit: a hit costs nothing
        if cached is not None:
            return cached
        reply = self._with_policy(lambda: self._generate(req))
        if reply.content is not None and req.stop_sequences:
            reply.content = trim_at_stop(reply.content, req.stop_sequences)
        self._cache_store(req, reply)
        return reply

    def __call__(
        self,
        messages: Any,
        stop_sequences: list[str] | None = None,
        response_format: Any = None,
        tools_to_call_from: list[Any] | None = None,
        grammar: Any = None,
        **kwargs: Any,
    ) -> ChatMessage:
        return self.generate(
            messages,
            stop_sequences=stop_sequences,
            response_format=response_format,
            tools_to_call_from=tools_to_call_from,
            grammar=grammar,
            **kwargs,
        )

    def generate_stream(
        self,
        messages: Any,
        stop_sequences: list[str] | None = None,
        response_format: Any = None,
        tools_to_call_from: list[Any] | None = None,
        grammar: Any = None,
        **kwargs: Any,
    ) -> Iterator[ChatMessageStreamDelta]:
        """Yield content deltas; the last delta carries the usage. Stops are never emitted."""
        req = self._request(messages, stop_sequences, grammar, response_format, tools_to_call_from, kwargs)
        cached = self._cache_lookup(req)
        if cached is not None:
            yield from replay_deltas(cached)
            return
        shaper = StreamShaper(req.stop_sequences, self._cache_recorder(req))
        # The policy covers the stream's start only: once a delta came, a failure is final.
        stream, first = self._with_policy(lambda: self._open_stream(req))
        try:
            pending = list(first)
            while True:
                if pending:
                    delta = pending.pop()
                else:
                    try:
                        delta = next(stream)
                    except StopIteration:
                        break
                shaped = shaper.shape(delta)
                if shaped is not None:
                    yield shaped
            tail = shaper.finish()
            if tail is not None:
                yield tail
        except Exception as exc:
            err = self._broken_stream_error(exc)
            if err is exc:
                raise
            raise err from exc
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # a consumer that stops early ends the backend's stream (and its connection)

    def _open_stream(
        self, req: GenerationRequest
    ) -> tuple[Iterator[ChatMessageStreamDelta], list[ChatMessageStreamDelta]]:
        """Start the backend's stream and wait for its first delta (or its end)."""
        stream = iter(self._generate_stream(req))
        try:
            return stream, [next(stream)]
        except StopIteration:
            return stream, []

    def _with_policy(self, fn: Callable[[], T]) -> T:
        """Run one request under the retry policy and rate limit; every failure leaves as a
        :class:`ModelFactoryError` (an unexpected exception is wrapped in a :class:`BackendError`)."""

        def attempt() -> T:
            try:
                return fn()
            except ModelFactoryError:
                raise
            except Exception as exc:  # anything from deep inside an SDK becomes one readable error
                raise self._backend_error(exc) from exc

        limiter = getattr(self, "_limiter", None)
        return call_with_retry(
            attempt, self.spec.retry, before_attempt=limiter.acquire if limiter is not None else None
        )

    # ------------------------------------------------------------------ response cache

    def _cache_lookup(self, req: GenerationRequest) -> ChatMessage | None:
        """The stored reply to ``req`` when ``cache.mode`` is read_write or replay, else None; a miss
        in replay raises :class:`CacheMissError`. Call it before the retry policy and the rate limit."""
        cache = self.spec.cache
        if not cache.enabled:
            return None
        key = request_key(self, req)
        try:
            data = get_store(cache.path).get(key)
        except DataError:  # a corrupt row: it names the file and the fix itself
            raise
        except Exception as exc:  # sqlite3.Error: one readable error
            raise self._cache_error(exc, cache.path) from exc
        if data is None:
            if cache.mode == "replay":
                raise CacheMissError(
                    model_id=self.model_id, backend=type(self).__name__, path=cache.path, key=key
                )
            return None
        reply = ChatMessage.from_dict(data)
        reply.raw = {"cache": "hit", "key": key}
        return reply

    def _cache_store(self, req: GenerationRequest, reply: ChatMessage) -> None:
        """Store ``reply`` (content already trimmed at the stops) when ``cache.mode`` is read_write."""
        cache = self.spec.cache
        if cache.mode != "read_write":
            return
        try:
            # scrubbed first: a provider that echoes the key must not put it in the file, nor have a
            # replay after the key was rotated print the old one
            data = scrub_tree(reply.to_dict(), self.redact)
            get_store(cache.path).put(request_key(self, req), self.model_id, data)
        except Exception as exc:
            raise self._cache_error(exc, cache.path) from exc

    def _cache_recorder(self, req: GenerationRequest) -> StreamRecorder | None:
        """For a stream that missed in read_write mode: collects its deltas, stores the reply at its end."""
        if self.spec.cache.mode != "read_write":
            return None
        return StreamRecorder(lambda reply: self._cache_store(req, reply))

    def _cache_error(self, exc: Exception, path: str) -> BackendError:
        return BackendError(
            f"response cache {path}: {type(exc).__name__}: {exc}",
            model_id=self.model_id,
            backend=type(self).__name__,
        )

    # ------------------------------------------------------------------ backend hooks

    def load(self) -> Model:
        """Bring the model up now (weights, a client) instead of on the first call; returns ``self``.
        ``modelfactory serve`` calls it before it listens. Default: nothing to load."""
        return self

    def batch_adapter(self) -> BatchAdapter | None:
        """The provider's batch endpoint for ``runner.provider_batch`` (:mod:`modelfactory._batchapi`), reached
        with this model's client and credentials; ``None``: the backend has none (the default). Each
        backend supplies its own, so :mod:`modelfactory.batch` drives any of them without knowing one."""
        return None

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        """The one required hook: answer one normalised request. Errors may be the SDK's own (see
        :meth:`_translate`); the base class trims the stops, retries and caches around it."""
        raise NotImplementedError

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        """Yield the reply in deltas, the usage on the last one; stops are filtered by the base class."""
        raise UnsupportedFeatureError(f"{type(self).__name__} does not support streaming")

    async def _agenerate(self, req: GenerationRequest) -> ChatMessage:
        """Async hook; by default the sync ``_generate`` in a worker thread (local models, callables)."""
        return await asyncio.to_thread(self._generate, req)

    async def _agenerate_stream(self, req: GenerationRequest) -> AsyncIterator[ChatMessageStreamDelta]:
        """Async stream hook; by default the sync ``_generate_stream``, pulled one delta per thread hop."""
        stream = await asyncio.to_thread(lambda: iter(self._generate_stream(req)))
        done = object()
        try:
            while True:
                delta = await asyncio.to_thread(next, stream, done)
                if delta is done:
                    break
                yield delta  # type: ignore[misc]
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                await asyncio.to_thread(close)

    def _translate(self, exc: Exception) -> Exception:
        """Turn an exception of the backend's SDK into a :class:`BackendError` that says what failed
        (status, retryable, ``retry_after``, secrets scrubbed); return anything unknown unchanged (the
        base class then wraps it with :meth:`_backend_error`). Default: every exception is unknown."""
        return exc

    def _endpoint(self) -> str:
        """Where requests go, for error messages ("cannot connect to <endpoint>")."""
        return f"{type(self).__name__} {self.model_id!r}"

    def _auth_hint(self) -> str:
        """Appended to a 401/403 message: where this backend's key comes from. Default: nothing."""
        return ""

    def _broken_stream_error(self, exc: Exception) -> Exception:
        """The error to raise for a stream that failed after it started: never retried from here."""
        err: Exception = exc if isinstance(exc, ModelFactoryError) else self._backend_error(exc)
        if isinstance(err, BackendError) and err.retryable:
            err.set_attempts(err.attempts, "the stream broke after it had started: not retried")
        return err

    def _backend_error(self, exc: Exception) -> BackendError:
        """Wrap an unexpected exception, scrubbing every secret the spec holds from its text.

        Retryable by class only: a builtin ``ConnectionError`` / ``TimeoutError`` (e.g. from a
        ``CallableModel``'s function), or an HTTP status that is (``status_code`` 429, 408, 5xx).
        """
        status = getattr(exc, "status_code", None)
        status = status if isinstance(status, int) and not isinstance(status, bool) else None
        return self._provider_error(
            f"{type(exc).__name__}: {exc}",
            status=status,
            retryable=isinstance(exc, (ConnectionError, TimeoutError)) or is_retryable_status(status),
        )

    def _provider_error(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> BackendError:
        """A ``BackendError`` of this model: its id and backend named, every secret scrubbed from the text."""
        return BackendError(
            self.redact(message),
            model_id=self.model_id,
            backend=type(self).__name__,
            status=status,
            retryable=retryable,
            retry_after=retry_after,
        )

    def secret_values(self) -> list[str]:
        """Every secret this model may send; backends add keys they resolve outside the spec."""
        return self.spec.secret_values()

    def redact(self, text: str) -> str:
        """``text`` without this model's secrets nor secret-named environment values
        (:mod:`modelfactory.secrets`)."""
        return redact_env(scrub(text, self.secret_values()))

    # ------------------------------------------------------------------ smolagents compatibility

    def parse_tool_calls(self, message: ChatMessage) -> ChatMessage:
        """Find a JSON ``{"name": ..., "arguments": ...}`` tool call in the text of ``message``."""
        if message.tool_calls:
            return message
        text = message.content or ""
        match = re.search(r"\{.*\}", text, re.DOTALL)
        if not match:
            raise BackendError(
                f"no tool call found in the model output: {text[:200]!r}",
                model_id=self.model_id,
                backend=type(self).__name__,
            )
        try:
            data = json.loads(match.group(0))
            name = data["name"]
            args = data.get("arguments", data.get("parameters", {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(
                f"the model output holds no valid JSON tool call ({exc}): {text[:200]!r}",
                model_id=self.model_id,
                backend=type(self).__name__,
            ) from None
        message.tool_calls = [
            ToolCall(id=tool_call_id(message, text), function=ToolCallFunction(name=name, arguments=args))
        ]
        return message
