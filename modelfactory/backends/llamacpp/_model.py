"""LlamaCppModel: the call contract over a loaded llama.cpp model."""

from __future__ import annotations

import codecs
import json
import random
import time
from collections.abc import Generator, Iterator, Sequence
from typing import Any, ClassVar

from ...errors import (
    BackendError,
    MessageError,
    UnsupportedFeatureError,
)
from ...messages import ChatMessage, ChatMessageStreamDelta
from ...model import GenerationRequest, Model
from ...reasoning import template_kwargs
from .._completion import Embeddings, TextCompletion
from .._local import (
    LOGPROB_PARAMS,
    LocalWeights,
    asked_logprobs,
    check_prompt_chars,
    longest_token,
    reply_budget,
    text_message,
    tool_call_schema,
    with_tools_block,
)
from .._local_output import (
    Outcome,
    SettledText,
    backend_errors,
    last_outcome,
    local_reply,
    response_schema,
    stream_deltas,
)
from . import _completions

__all__ = ["LlamaCppModel"]

from ._runtime import WEIGHTS, _import_llama_cpp, _Runtime, close_at_exit, no_amx_repack
from ._spec import _PARAMS, LlamaCppSpec

# --------------------------------------------------------------------------- generation


def _reused_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    """Prompt tokens llama.cpp will not evaluate again: the prefix shared with the tokens it holds, less
    one when that is the whole prompt (the last one is evaluated again for fresh logits), as
    ``Llama.generate`` decides."""
    n = 0
    for a, b in zip(cached, prompt, strict=False):
        if a != b:
            break
        n += 1
    return n - 1 if n and n == len(prompt) else n


def _evaluated(llama_cpp: Any, llama: Any) -> int | None:
    """Tokens llama.cpp has decoded in this context so far (its own perf counters), if it counts them."""
    try:
        perf = llama_cpp.llama_perf_context(llama.ctx)
        return int(perf.n_p_eval) + int(perf.n_eval)
    except Exception:
        return None


def _sample(
    rt: _Runtime, tokens: Iterator[int], text: SettledText, out_ids: list[int], max_new: int
) -> Generator[str, None, str]:
    """Read the sampled ``tokens`` (the caller holds the lock) into ``out_ids`` and ``text``: yields each
    settled piece; returns the finish reason (``stop`` at an end-of-generation token or a stop)."""
    llama, llama_cpp = rt.llama, rt.llama_cpp
    vocab = llama._model.vocab
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        for token in tokens:
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                return "stop"
            out_ids.append(int(token))
            piece = text.grow(text.text + decoder.decode(llama.detokenize([token])))
            if piece:
                yield piece
            if text.matched is not None:
                return "stop"
            if len(out_ids) >= max_new:
                break
        return "length"
    finally:
        close = getattr(tokens, "close", None)
        if close is not None:
            close()


class LlamaCppModel(LocalWeights[_Runtime], Model):
    """Chat with a GGUF model through llama.cpp. Build with ``model_id`` = a GGUF path or ``pkg:`` file."""

    Spec = LlamaCppSpec
    spec: LlamaCppSpec
    supports_grammar = True
    supports_response_format = True
    supports_tools = True  # schemas rendered into the prompt; JSON tool calls parsed from the text
    text_only = True  # a causal LM: content parts are joined into text (smolagents' flatten_messages_as_text)
    is_local: ClassVar[bool] = True  # in-process, one call at a time: the runner goes sequentially
    best_for: ClassVar[str] = (
        "one conversation at a time on a CPU (a chat, an agent loop), grammars and JSON schemas; it answers "
        "one request at a time, so for a dataset or `modelfactory serve` under load OpenVINOModel (continuous "
        "batching) or TransformersModel's generate_batch is faster (README: Which local backend for which job)"
    )

    weights = WEIGHTS

    # ------------------------------------------------------------------ loading (_local.LocalWeights)

    def _runtime_key(self) -> tuple[Any, ...]:
        _import_llama_cpp()  # a missing llama_cpp names the extra, loaded elsewhere or not
        return self.spec.load_key()

    @property
    def llama(self) -> Any:
        """The ``llama_cpp.Llama`` object (loads it). Not thread-safe: hold no reference across calls."""
        return self.runtime.llama

    def clear_prompt_cache(self) -> None:
        """Forget the evaluated tokens kept from the last call on this model's Llama, whichever model made
        it (models with the same load settings share one): the next call evaluates its whole prompt.
        Loads nothing."""
        rt = self._runtime
        if rt is None or rt.freed:
            rt = WEIGHTS.get(self.spec.load_key())
        if rt is not None:
            with rt.lock:
                if not rt.freed:
                    rt.llama.reset()

    def _load_runtime(self, key: tuple[Any, ...]) -> _Runtime:
        start = time.perf_counter()
        llama_cpp = _import_llama_cpp()
        spec = self.spec
        path = spec.gguf_path()
        if spec.n_gpu_layers and not llama_cpp.llama_supports_gpu_offload():
            raise BackendError(
                f"n_gpu_layers={spec.n_gpu_layers} but this llama-cpp-python build cannot offload to a GPU. "
                "Fix: set model.n_gpu_layers=0, or reinstall it with GPU support, e.g. "
                "CMAKE_ARGS='-DGGML_CUDA=on' pip install --force-reinstall --no-cache-dir llama-cpp-python",
                model_id=self.model_id,
                backend=type(self).__name__,
            )
        threads = key[2]
        try:
            with no_amx_repack(llama_cpp):  # the AMX repack crashes llama.cpp's first decode (_runtime)
                llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=spec.n_ctx,
                    n_threads=threads,
                    n_threads_batch=key[3],
                    n_gpu_layers=spec.n_gpu_layers,
                    n_batch=spec.n_batch,
                    verbose=spec.verbose,
                    **spec.model_kwargs,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(
                f"llama.cpp cannot load {str(path)!r}: {exc}. Fix: check that it is a complete GGUF file "
                "of an architecture this llama-cpp-python supports (upgrade it for newer models); set "
                "model.verbose=true to see llama.cpp's log",
                model_id=self.model_id,
                backend=type(self).__name__,
            ) from None
        template = spec.chat_template or llama.metadata.get("tokenizer.chat_template")
        formatter = None
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            eos, bos = llama.token_eos(), llama.token_bos()
            formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
                bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
            )
        close_at_exit()
        return _Runtime(llama, llama_cpp, formatter, key=key, load_s=time.perf_counter() - start)

    # ------------------------------------------------------------------ prompts

    def chat_prompt(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> str:
        """The prompt text the chat template builds (tools in the template's way, else a system block)."""
        formatter = self.runtime.formatter
        if formatter is None:
            raise BackendError(
                "the GGUF has no chat template (tokenizer.chat_template); set model.chat_template to a "
                "Jinja template",
                model_id=self.model_id,
                backend=type(self).__name__,
            )
        rows = [text_message(m, i, "LlamaCppModel") for i, m in enumerate(messages)]
        extra = template_kwargs(self.spec)  # enable_thinking (modelfactory.reasoning)
        try:
            text = formatter(messages=rows, **extra).prompt
            if tools:
                with_tools = formatter(messages=rows, tools=list(tools), **extra).prompt
                if with_tools != text:
                    return str(with_tools)
                text = formatter(messages=with_tools_block(rows, tools), **extra).prompt
        except Exception as exc:  # jinja2 errors, raise_exception() of a template
            raise MessageError(f"the chat template cannot render these messages: {exc}") from None
        return str(text)

    @property
    def context_length(self) -> int:
        """The context window in tokens, prompt and reply together: ``model.n_ctx`` as loaded (0 resolved
        to the model's training length). Loads the model."""
        return int(self.runtime.llama.n_ctx())

    def count_prompt_tokens(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> int:
        """How many tokens ``messages`` (normalised) make once templated: what a call would evaluate.

        A prompt too long for the context by its length alone raises :class:`ContextLengthError` without
        being tokenized (``modelfactory serve`` calls this before it queues a request)."""
        return len(self._prompt_ids(self.runtime, self.chat_prompt(messages, tools), None))

    def _prompt_ids(self, rt: _Runtime, prompt: str, requested: int | None) -> list[int]:
        """The prompt's token ids, refused first when its characters alone cannot fit the context. Needs
        no lock: tokenizing only reads the vocabulary."""
        llama = rt.llama
        if not rt.chars_per_token:
            try:
                get = llama._model.token_get_text
                rt.chars_per_token = longest_token(get(i) for i in range(llama.n_vocab()))
            except Exception:  # a build without the accessor: the fallback bound
                rt.chars_per_token = longest_token(())
        check_prompt_chars(
            len(prompt),
            int(llama.n_ctx()),
            rt.chars_per_token,
            backend=type(self).__name__,
            max_tokens=requested,
            context_key="model.n_ctx",
        )
        return self.tokenize(prompt)

    def tokenize(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt (the template wrote every special token: none is added)."""
        return [
            int(t) for t in self.runtime.llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        ]

    # ------------------------------------------------------------------ sampling

    def _sampling(self, params: dict[str, Any]) -> tuple[dict[str, Any], int | None, int | None]:
        """``Llama.generate`` sampling arguments, the token budget asked for (None: the model's default,
        ``max_new_tokens``), and the seed, from merged params.

        Greedy unless ``temperature`` > 0 (as TransformersModel); no repeat penalty unless asked for
        (``create_chat_completion`` defaults to 1.1, which changes greedy replies).
        """
        unknown = sorted(set(params) - _PARAMS)
        if unknown:
            raise MessageError(
                f"LlamaCppModel does not take {', '.join(unknown)}; it takes {', '.join(sorted(_PARAMS))}"
            )
        params = dict(params)
        max_tokens, max_new_tokens = params.pop("max_tokens", None), params.pop("max_new_tokens", None)
        max_new = max_tokens or max_new_tokens
        seed = params.pop("seed", None)
        temperature = params.pop("temperature", None)
        top_p = params.pop("top_p", None)
        sampling: dict[str, Any] = {"temp": float(temperature or 0.0), "repeat_penalty": 1.0}
        if top_p is not None:
            sampling["top_p"] = float(top_p)
        sampling.update(params)
        return sampling, int(max_new) if max_new else None, None if seed is None else int(seed)

    def _grammar(self, rt: _Runtime, req: GenerationRequest, tool_choice: Any) -> Any:
        """The ``LlamaGrammar`` of ``grammar``, ``response_format`` or a required tool call (checked by
        llama.cpp's parser, kept per GBNF text), or None."""
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, json_schema_to_gbnf

        def from_schema(schema: Any, what: str) -> str:
            if schema is True or not isinstance(schema, dict):
                return str(JSON_GBNF)
            try:
                return str(json_schema_to_gbnf(json.dumps(schema)))
            except Exception as exc:
                raise MessageError(f"{what}: cannot turn the JSON schema into a grammar: {exc}") from None

        gbnf: str | None = None
        g = req.grammar
        if g is not None:
            if isinstance(g, str):
                gbnf = g
            elif (
                isinstance(g, dict)
                and g.get("type") in ("gbnf", "grammar")
                and isinstance(g.get("value"), str)
            ):
                gbnf = g["value"]
            elif isinstance(g, dict) and g.get("type") in ("json", "json_schema"):
                gbnf = from_schema(g.get("value", True), "grammar")
            else:
                raise UnsupportedFeatureError(
                    "LlamaCppModel takes grammar as GBNF text, {'type': 'gbnf', 'value': <GBNF>} or "
                    f"{{'type': 'json', 'value': <JSON schema>}}; got {str(g)[:80]!r} (regex is not supported)"
                )
        if req.response_format is not None:
            if gbnf is not None:
                raise MessageError("give grammar or response_format, not both")
            schema = response_schema(req.response_format, "LlamaCppModel")
            if schema is not None:
                gbnf = from_schema(schema, "response_format")
        if req.tools and tool_choice != "auto" and gbnf is None:
            gbnf = from_schema(tool_call_schema(req.tools, tool_choice), "tools")
        if gbnf is None:
            return None
        grammar = rt.grammars.get(gbnf)
        if grammar is None:
            # llama.cpp returns NULL for a grammar it cannot parse, and a NULL sampler in the chain
            # crashes the process: parse it once here and refuse it cleanly instead.
            llama_cpp = rt.llama_cpp
            sampler = llama_cpp.llama_sampler_init_grammar(rt.llama._model.vocab, gbnf.encode(), b"root")
            if not sampler:
                raise MessageError(
                    "grammar: llama.cpp cannot parse this GBNF (its rules must define `root`); "
                    "set model.verbose=true to see the parser's message"
                )
            llama_cpp.llama_sampler_free(sampler)
            grammar = rt.grammars[gbnf] = LlamaGrammar.from_string(gbnf, verbose=False)
            if len(rt.grammars) > 64:
                rt.grammars.pop(next(iter(rt.grammars)))
        return grammar

    # ------------------------------------------------------------------ generation

    def _decode(self, req: GenerationRequest) -> Iterator[str | Outcome]:
        """Generate for ``req``: yields settled text pieces, then one :class:`Outcome`. Holds the lock until
        it ends (or is closed), so a stream keeps the model to itself while it is read."""
        rt = self.runtime
        prompt = self.chat_prompt(req.messages, req.tools)
        params = dict(req.params)
        params.pop(
            "tool_choice", None
        )  # the request carries it (Model._request: the call's, else the spec's)
        tool_choice = req.tool_choice if req.tool_choice is not None else self.spec.tool_choice
        logprobs = asked_logprobs(params)  # read from the generation's own logits below, if asked
        for key in LOGPROB_PARAMS:
            params.pop(key, None)
        if logprobs is not None:
            self.check_logprobs()
        sampling, requested, seed = self._sampling(params)
        text = SettledText(req.provider_stop or [])
        with rt.lock:
            if rt.freed:  # freed by another thread between runtime and the lock
                raise BackendError("the model was freed during the call", model_id=self.model_id)
            llama, llama_cpp = rt.llama, rt.llama_cpp
            ids = self._prompt_ids(rt, prompt, requested)
            # an asked max_tokens that does not fit is refused; the default is shortened to fit
            max_new = reply_budget(
                len(ids),
                llama.n_ctx(),
                requested,
                self.spec.max_new_tokens,
                backend=type(self).__name__,
                context_key="model.n_ctx",
            )
            grammar = self._grammar(rt, req, tool_choice)
            if not self.spec.prompt_cache:
                llama.reset()
            cached = _reused_prefix(llama._input_ids.tolist(), ids) if llama.n_tokens else 0
            evaluated_before = _evaluated(llama_cpp, llama)
            llama.set_seed(seed if seed is not None else random.randrange(2**31))
            out_ids: list[int] = []
            tokens = llama.generate(ids, grammar=grammar, **sampling)
            finish = yield from _sample(rt, tokens, text, out_ids, max_new)
            rest, _ = text.end()
            if rest:
                yield rest
            after = _evaluated(llama_cpp, llama)
            scored = (
                None if logprobs is None else _completions.reply_logprobs(llama, len(ids), out_ids, logprobs)
            )
        evaluated = None if after is None or evaluated_before is None else after - evaluated_before
        yield Outcome(
            text.text,
            prompt,
            len(ids),
            out_ids,
            finish,
            text.matched,
            {"cached_prompt_tokens": cached, "evaluated_tokens": evaluated},
            scored,
        )

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        return local_reply(self, last_outcome(self._decode(req)), req)

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        if asked_logprobs(req.params) is not None:
            raise UnsupportedFeatureError(
                "logprobs: LlamaCppModel does not stream them; call the model without streaming "
                "(model(messages, logprobs=True)) or drop logprobs/top_logprobs"
            )
        yield from stream_deltas(self._decode(req))

    def check_logprobs(self) -> None:
        """Refuses (:class:`UnsupportedFeatureError`, naming the load setting) when this model cannot
        score its replies' tokens (``logprobs=True``): loaded without ``logits_all``. Loads the model."""
        _completions.check_logits(self.runtime.llama)

    # ------------------------------------------------------------------ completions and embeddings

    def complete_text(self, prompt: str | Sequence[int], **kwargs: Any) -> TextCompletion:
        """A plain-text completion of ``prompt`` (no chat template), with log-probabilities if asked
        (load with ``model_kwargs={logits_all: true}``): ``/v1/completions`` of ``modelfactory serve``."""
        with backend_errors(self):
            return _completions.complete_text(self, prompt, **kwargs)

    def embed(self, inputs: Sequence[str | Sequence[int]]) -> Embeddings:
        """llama.cpp's pooled embeddings, one per input (load with ``model_kwargs={embedding: true}``)."""
        with backend_errors(self):
            return _completions.embed(self, inputs)
