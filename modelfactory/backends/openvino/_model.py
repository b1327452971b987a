"""OpenVINOModel: the call contract over an OpenVINO GenAI continuous-batching pipeline."""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import BackendError, ConfigError, MessageError, UnsupportedFeatureError
from ...messages import ChatMessage, ChatMessageStreamDelta, trim_at_stop
from ...model import GenerationRequest, Model
from .._local import LocalWeights, text_message, tool_call_schema, with_tools_block
from .._local_output import (
    Outcome,
    SettledText,
    last_outcome,
    local_reply,
    response_schema,
    row_error,
    row_stops,
    stream_deltas,
)
from ._convert import ir_directory
from ._runtime import WEIGHTS, Request, _Runtime, import_genai
from ._spec import _PARAMS, OpenVINOSpec

__all__ = ["OpenVINOModel"]


@dataclass
class _Prepared:
    req: GenerationRequest
    prompt: str
    ids: list[int]
    config: Any
    stops: list[str]


def _schema_text(response_format: Any) -> str | None:
    """The JSON schema text a ``response_format`` asks for (None: plain text)."""
    schema = response_schema(response_format, "OpenVINOModel")
    return None if schema is None else json.dumps({"type": "object"} if schema is True else schema)


def _genai_stops(stops: Sequence[str]) -> set[str]:
    """The stops GenAI may end generation on by itself: all of them unless one holds another (then the
    first completed stop is not always where the reply ends, and our own check decides alone)."""
    for a in stops:
        for b in stops:
            if a != b and a in b:
                return set()
    return {s for s in stops if s}


class OpenVINOModel(LocalWeights[_Runtime], Model):
    """Chat with a model run by OpenVINO GenAI. ``model_id``: an IR dir, a Hub IR repo, or a GGUF file."""

    Spec = OpenVINOSpec
    spec: OpenVINOSpec
    supports_grammar = True
    supports_response_format = True
    supports_tools = True  # schemas rendered into the prompt; JSON tool calls parsed from the text
    is_local: ClassVar[bool] = True
    batch_uses_cache: ClassVar[bool] = True  # generate_batch looks each row up in the response cache
    # Concurrent calls are decoded together by the engine: `modelfactory serve` sends each request as it
    # comes (serve/dispatch.py) instead of holding requests for a generate_batch window.
    continuous_batching: ClassVar[bool] = True
    best_for: ClassVar[str] = (
        "datasets and many clients on a CPU: continuous batching decodes the runner's batches and `modelfactory "
        "serve`'s concurrent requests together, several times TransformersModel's tokens per CPU-second; for "
        "one chat at a time LlamaCppModel is as fast and loads in a second (README: Which local backend for "
        "which job)"
    )

    weights = WEIGHTS

    # ------------------------------------------------------------------ loading (_local.LocalWeights)

    def _runtime_key(self) -> tuple[Any, ...]:
        import_genai()  # a missing openvino_genai names the extra, loaded elsewhere or not
        return self.spec.load_key()

    @property
    def context_length(self) -> int | None:
        """The most tokens (prompt and reply together) the model takes."""
        return self.spec.context_length or self.runtime.context_length

    def _properties(self) -> dict[str, Any]:
        spec = self.spec
        props: dict[str, Any] = dict(spec.ov_config)
        if spec.num_threads:
            props["INFERENCE_NUM_THREADS"] = spec.num_threads
        bf16 = spec.bf16_problem()
        if bf16 is not None:  # before OpenVINO can kill the process
            raise ConfigError([bf16], title=f"{type(self).__name__} cannot load on this machine")
        precision = spec.activation_precision()
        if precision != "auto":
            props["INFERENCE_PRECISION_HINT"] = precision
            if precision == "f32":
                # int8/int4 weights: no dynamic int8 quantization of the activations either (it changes
                # greedy answers; f32 is the setting that matches transformers fp32).
                props.setdefault("DYNAMIC_QUANTIZATION_GROUP_SIZE", 0)
        if spec.kv_cache_precision != "auto":
            props["KV_CACHE_PRECISION"] = spec.kv_cache_precision
        return props

    def _load_runtime(self, key: tuple[Any, ...]) -> _Runtime:
        start = time.perf_counter()
        genai = import_genai()
        spec = self.spec
        props = self._properties()  # a refused setting fails before a conversion
        source = ir_directory(spec, backend=type(self).__name__)
        scheduler = genai.SchedulerConfig()
        scheduler.cache_size = max(1, int(round(spec.cache_size_gb)))
        scheduler.max_num_seqs = spec.max_num_seqs
        scheduler.enable_prefix_caching = spec.prompt_cache
        try:
            pipe = genai.ContinuousBatchingPipeline(source.directory, scheduler, spec.device, props)
        except RuntimeError as exc:
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            fix = (
                # bf16 activations with kv_cache_precision f32: "expect kvcache type bf16, current: f32"
                "leave model.kv_cache_precision auto, or pick one that suits model.inference_precision "
                "(bf16 activations take a bf16 or u8 KV cache)"
                if "kvcache" in last.lower().replace(" ", "").replace("_", "")
                else "check that the directory holds a complete IR (openvino_model.xml/.bin, "
                "openvino_tokenizer.xml, openvino_detokenizer.xml) and that model.device and "
                "model.ov_config name what this machine has"
            )
            raise BackendError(
                f"OpenVINO cannot load {source.directory!r}: {last}. Fix: {fix}",
                model_id=self.model_id,
                backend=type(self).__name__,
            ) from None
        tokenizer = pipe.get_tokenizer()
        template = spec.chat_template or tokenizer.chat_template or ""
        eos = {int(tokenizer.get_eos_token_id())}
        with contextlib.suppress(Exception):
            eos |= {int(t) for t in pipe.get_config().stop_token_ids}
        return _Runtime(
            pipe=pipe,
            tokenizer=tokenizer,
            key=key,
            directory=source.directory,
            context_length=source.context_length,
            chat_template=template,
            eos_ids=frozenset(eos),
            load_s=time.perf_counter() - start,
            converted=source.converted,
        )

    # ------------------------------------------------------------------ prompts

    def chat_prompt(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> str:
        """The prompt text the chat template builds (tools in the template's way, else a system block)."""
        rt = self.runtime
        if not rt.chat_template:
            raise BackendError(
                "the model has no chat template; set model.chat_template to a Jinja template",
                model_id=self.model_id,
                backend=type(self).__name__,
            )
        rows = [text_message(m, i, "OpenVINOModel") for i, m in enumerate(messages)]

        def render(rows: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
            with rt.tok_lock:
                return str(rt.tokenizer.apply_chat_template(rows, True, rt.chat_template, tools=tools))

        try:
            text = render(rows)
            if tools:
                with_tools = render(rows, list(tools))
                if with_tools != text:
                    return with_tools
                text = render(with_tools_block(rows, tools))
        except RuntimeError as exc:  # the template's own errors (raise_exception, unknown filters)
            raise MessageError(f"the chat template cannot render these messages: {exc}") from None
        return text

    def tokenize(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt (the template wrote every special token: none is added)."""
        return self.runtime.encode(prompt)

    # ------------------------------------------------------------------ requests

    def _config(self, req: GenerationRequest, prompt_tokens: int) -> tuple[Any, list[str]]:
        genai = import_genai()
        params = dict(req.params)
        params.pop("tool_choice", None)
        # the request carries it (Model._request: the call's, else the configured one), as for llama.cpp
        tool_choice = req.tool_choice if req.tool_choice is not None else self.spec.tool_choice
        unknown = sorted(set(params) - _PARAMS)
        if unknown:
            raise MessageError(
                f"OpenVINOModel does not take {', '.join(unknown)}; it takes {', '.join(sorted(_PARAMS))}"
            )
        max_new = int(params.pop("max_tokens", None) or params.pop("max_new_tokens", None) or 0)
        params.pop("max_new_tokens", None)
        max_new = max_new or self.spec.max_new_tokens
        ctx = self.context_length
        if ctx is not None:
            if prompt_tokens >= ctx:
                raise MessageError(
                    f"the prompt has {prompt_tokens} tokens but the model's context window is {ctx} "
                    "(model.context_length): shorten the conversation"
                )
            max_new = min(max_new, ctx - prompt_tokens)
        config = genai.GenerationConfig()
        config.max_new_tokens = max_new
        temperature = params.pop("temperature", None)
        seed = params.pop("seed", None)
        top_p = params.pop("top_p", None)
        if temperature:  # greedy unless temperature > 0, as the other local backends
            config.do_sample = True
            config.temperature = float(temperature)
            config.rng_seed = int(seed) if seed is not None else random.randrange(2**31)
            if top_p is not None:
                config.top_p = float(top_p)
        for name, value in params.items():
            setattr(config, name, value)
        stops = list(req.provider_stop or [])
        if stops:
            config.stop_strings = _genai_stops(stops)
            config.include_stop_str_in_output = True  # every generated token is counted; we trim the text
        structured = self._structured(req, tool_choice)
        if structured is not None:
            config.structured_output_config = structured
        return config, stops

    def _structured(self, req: GenerationRequest, tool_choice: Any) -> Any:
        """The StructuredOutputConfig of ``grammar``, ``response_format`` or a required tool call."""
        genai = import_genai()
        out: dict[str, str] = {}
        g = req.grammar
        if g is not None:
            if isinstance(g, str):
                out["grammar"] = g
            elif (
                isinstance(g, dict)
                and g.get("type") in ("gbnf", "grammar", "ebnf")
                and isinstance(g.get("value"), str)
            ):
                out["grammar"] = g["value"]
            elif isinstance(g, dict) and g.get("type") == "regex" and isinstance(g.get("value"), str):
                out["regex"] = g["value"]
            elif isinstance(g, dict) and g.get("type") in ("json", "json_schema"):
                value = g.get("value", True)
                out["json_schema"] = json.dumps(value if isinstance(value, dict) else {"type": "object"})
            else:
                raise UnsupportedFeatureError(
                    "OpenVINOModel takes grammar as EBNF/GBNF text, {'type': 'gbnf'|'regex', 'value': <text>} "
                    f"or {{'type': 'json', 'value': <JSON schema>}}; got {str(g)[:80]!r}"
                )
        if req.response_format is not None:
            if out:
                raise MessageError("give grammar or response_format, not both")
            schema = _schema_text(req.response_format)
            if schema is not None:
                out["json_schema"] = schema
        if req.tools and tool_choice != "auto" and not out:
            out["json_schema"] = json.dumps(tool_call_schema(req.tools, tool_choice))
        return genai.StructuredOutputConfig(**out) if out else None

    def _prepare(self, req: GenerationRequest) -> _Prepared:
        prompt = self.chat_prompt(req.messages, req.tools)
        ids = self.tokenize(prompt)
        config, stops = self._config(req, len(ids))
        return _Prepared(req, prompt, ids, config, stops)

    # ------------------------------------------------------------------ generation

    def _decode(self, prep: _Prepared, request: Request) -> Generator[str | Outcome, None, None]:
        """Read ``handle``'s tokens as the engine makes them: yields settled text pieces, then one
        :class:`Outcome`. Closing the generator early cancels the request."""
        rt = self.runtime
        text = SettledText(prep.stops)
        out_ids: list[int] = []
        finish = "length"
        finished = False
        try:
            for new, reason in self._tokens(rt, prep, request):
                for token in new:
                    if token in rt.eos_ids:
                        finish = "stop"
                        continue
                    out_ids.append(token)
                if new:
                    full = rt.decode(out_ids)
                    settled = full[:-1] if full.endswith("\ufffd") else full  # a character still incomplete
                    piece = text.grow(full, settled)
                    if piece:
                        yield piece
                    if text.matched is not None:
                        finish = "stop"
                        break
                if reason:
                    finished = True
                    if reason == "stop":
                        finish = "stop"
                    break
        finally:
            if not finished:
                request.cancel()
                with rt.cv:
                    rt.live.discard(request)
        rest, cut = text.end()
        if cut:
            finish = "stop"
        if rest:
            yield rest
        yield Outcome(text.text, prep.prompt, len(prep.ids), out_ids, finish, text.matched)

    def _tokens(self, rt: _Runtime, prep: _Prepared, request: Request) -> Iterator[tuple[list[int], str]]:
        """``rt.tokens``, with a constraint xgrammar cannot compile reported as the caller's mistake."""
        try:
            yield from rt.tokens(request)
        except BackendError as exc:
            if getattr(prep.config, "structured_output_config", None) is not None and "error" in str(exc):
                raise MessageError(
                    f"grammar/response_format: OpenVINO GenAI (xgrammar) cannot compile it: {exc.args[0]}"
                ) from None
            raise

    def _finish(self, prep: _Prepared, request: Request) -> ChatMessage:
        return local_reply(self, last_outcome(self._decode(prep, request)), prep.req)

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        prep = self._prepare(req)
        return self._finish(prep, self.runtime.submit(prep.ids, prep.config))

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        prep = self._prepare(req)
        gen = self._decode(prep, self.runtime.submit(prep.ids, prep.config))
        try:
            yield from stream_deltas(gen)
        finally:
            gen.close()

    def generate_batch(
        self,
        conversations: Sequence[Any],
        stop_sequences: Sequence[str] | Sequence[Sequence[str] | None] | None = None,
        response_format: Any = None,
        tools_to_call_from: list[Any] | None = None,
        grammar: Any = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Generate a reply to each conversation, all submitted to the engine at once (decoded together).

        ``stop_sequences``: one list for every row, or one list (or ``None``) per row; each row stops on
        its own. ``kwargs`` apply to every row. Greedy rows give the tokens one-by-one calls give.
        ``return_exceptions``: a row whose conversation is invalid gets its exception instead of a reply.
        With the response cache on, each row is looked up (and stored) as a single call would be.
        """
        conversations = list(conversations)
        stop_rows = row_stops(stop_sequences, len(conversations))
        results: list[Any] = [None] * len(conversations)
        pending: list[tuple[int, _Prepared, Request]] = []

        def fail(i: int, exc: Exception, rest: Sequence[tuple[int, _Prepared, Request]]) -> None:
            err = row_error(self, exc, i)
            if not return_exceptions:
                for _, _, request in rest:
                    request.cancel()
                raise err from (None if err is exc else exc)
            results[i] = err

        for i, (conv, stops) in enumerate(zip(conversations, stop_rows, strict=True)):
            try:
                req = self._request(conv, stops, grammar, response_format, tools_to_call_from, kwargs)
                cached = self._cache_lookup(req)
                if cached is not None:
                    results[i] = cached
                    continue
                prep = self._prepare(req)
                pending.append((i, prep, self.runtime.submit(prep.ids, prep.config)))
            except Exception as exc:
                fail(i, exc, pending)
        for k, (i, prep, request) in enumerate(pending):
            try:
                reply = self._finish(prep, request)
                if reply.content is not None and prep.req.stop_sequences:
                    reply.content = trim_at_stop(reply.content, prep.req.stop_sequences)
                self._cache_store(prep.req, reply)
                results[i] = reply
            except Exception as exc:
                fail(i, exc, pending[k + 1 :])
        return results
