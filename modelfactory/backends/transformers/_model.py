"""The ``TransformersModel`` class: the call contract on a loaded runtime (see the package docstring)."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import (
    BackendError,
    MessageError,
    ModelFactoryError,
    UnsupportedFeatureError,
)
from ...messages import ChatMessage, ChatMessageStreamDelta, TokenUsage, trim_at_stop
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
    requested_reply,
)
from .._local_output import backend_errors, row_error, row_stops
from . import _completions
from ._chat import render_prompt
from ._dtype import choose_dtype
from ._loading import import_backend, load_runtime
from ._sampling import row_sampler, samples_per_row
from ._spec import TransformersSpec
from ._stopping import cancel_criteria, criteria_list, settled_streamer, stop_criteria, stream_generation
from ._vision import count_image_prompt, generate_with_images, stream_with_images
from ._weights import GENERATE_LOCK, WEIGHTS, Runtime

__all__ = ["TransformersModel"]


@dataclass
class _Row:
    req: GenerationRequest
    prompt: str
    ids: list[int]
    max_new: int  # the reply budget that fits the context with this prompt


@dataclass
class _Prepared:
    prompts: list[str]
    input_ids: Any  # (rows, width) tensor on the model's device, left-padded
    prompt_lens: list[int]  # unpadded prompt length of each row
    gen_kwargs: dict[str, Any]
    seed: int | None  # torch's global generator seeded with it (sampling that cannot draw per row)
    stop: Any  # the per-row stop criteria, or None
    max_new_tokens: int
    stops: list[list[str]] = field(default_factory=list)
    cached_tokens: int = 0  # prompt tokens whose KV came from the previous call (batch of one only)
    row_seeds: bool = False  # each row drawn from its own generator (:mod:`._sampling`)
    logprobs: int | None = None  # the call's top_logprobs when it asked for logprobs (None: it did not)


class TransformersModel(LocalWeights[Runtime], Model):
    """Chat with a local causal LM. ``builtin:tiny-llama`` ships with the package and runs offline."""

    Spec = TransformersSpec
    spec: TransformersSpec
    supports_tools = True  # schemas rendered into the prompt; JSON tool calls parsed from the text
    text_only = True  # a causal LM: content parts are joined into text (smolagents' flatten_messages_as_text)
    is_local = True  # weights in this process: one call at a time, failures are ours
    batch_uses_cache = True  # generate_batch looks each row up in the response cache (the runner batches)
    batch_seeds_per_row = True  # a seeded sampled row draws from its own generator (._sampling)
    best_for = (
        "batched work (a dataset through the runner, `modelfactory serve` under load: generate_batch), GPUs, "
        "hub checkpoints; for one conversation at a time on a CPU (a chat, an agent loop) LlamaCppModel on a "
        "GGUF decodes ~4x faster, and on a CPU OpenVINOModel batches faster (README: Which local backend for "
        "which job)"
    )

    weights = WEIGHTS

    # ------------------------------------------------------------------ loading (_local.LocalWeights)

    def _runtime_key(self) -> tuple[Any, ...]:
        torch, _ = import_backend(type(self).__name__)  # a missing torch names the extra, cached or not
        return self.cache_key(torch)

    def _load_runtime(self, key: tuple[Any, ...]) -> Runtime:
        """Tokenizer and weights, read as :func:`._loading.load_runtime` says."""
        return load_runtime(self, key)

    def cache_key(self, torch: Any = None) -> tuple[Any, ...]:
        """The weight-cache key: (source, revision, dtype, device, trust_remote_code, model_kwargs), with
        device ``auto`` resolved (so ``auto`` and ``cpu`` share weights on a machine without a GPU)."""
        key = list(self.spec.cache_key())
        device = key[3]
        if device == "auto" and torch is not None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        key[3] = "cuda:0" if device == "cuda" else device
        return tuple(key)

    def free(self) -> None:
        """Release the weights: drop them from the process cache and from every model sharing them.

        Waits for a generation in progress to end. A later call loads them again.
        """
        with GENERATE_LOCK:
            super().free()

    def clear_prompt_cache(self) -> None:
        """Forget the KV cache kept from the last call on these weights (see ``prompt_cache``), whichever
        model made it: its memory is freed and the next call prefills its whole prompt. Loads nothing."""
        with GENERATE_LOCK:
            rt = self._runtime
            torch = sys.modules.get("torch")
            # Not loaded by this model, or its copy freed since (clear_cache, another model's free()): the
            # weights the next call will use are the cached ones, maybe loaded by another model. No load.
            if (rt is None or rt.freed) and torch is not None:
                rt = WEIGHTS.get(self.cache_key(torch))
            if rt is not None:
                rt.prompt_cache.clear()

    @property
    def tokenizer(self) -> Any:
        return self.runtime.tokenizer

    @property
    def model(self) -> Any:
        return self.runtime.model

    @property
    def dtype(self) -> str:
        """The dtype the weights were loaded in (``auto`` resolved), e.g. ``"float32"``; loads them."""
        return str(self.runtime.dtype).replace("torch.", "")

    @property
    def device(self) -> str:
        return str(self.runtime.device)

    def _dtype(
        self, torch: Any, transformers: Any, device: Any, source: str, hub_kwargs: dict[str, Any]
    ) -> tuple[Any, str]:
        """The dtype to load the weights in, and why (the policy: :func:`._dtype.choose_dtype`)."""
        config_kwargs = {"trust_remote_code": self.spec.trust_remote_code, **hub_kwargs}
        return choose_dtype(self.spec.dtype, torch, transformers, device, source, config_kwargs)

    # ------------------------------------------------------------------ prompts

    def chat_prompt(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> str:
        """The prompt text the tokenizer's chat template builds from normalised messages.

        ``tools`` (OpenAI function schemas) go to the template as ``tools=``, or where it ignores them
        into a system message (:func:`._chat.render_prompt`); ``model.chat_template`` replaces the
        tokenizer's template, ``model.apply_chat_template_kwargs`` are extra template variables.
        """
        tok = self.tokenizer
        template = self.spec.chat_template
        if not (template or tok.chat_template):
            raise BackendError(
                "the tokenizer has no chat template; set model.chat_template to a Jinja template",
                model_id=self.model_id,
                backend=type(self).__name__,
            )
        return render_prompt(
            tok,
            messages,
            tools,
            template,
            {**template_kwargs(self.spec), **self.spec.apply_chat_template_kwargs},
        )

    @property
    def context_length(self) -> int | None:
        """The most tokens (prompt and reply together) a call may use: ``model.context_length``, else the
        model's ``max_position_embeddings``."""
        if self.spec.context_length is not None:
            return self.spec.context_length
        config: Any = getattr(self.runtime.model, "config", None)
        text_config = getattr(config, "get_text_config", None)
        if callable(text_config):  # a vision-language model's is its language model's
            config = text_config()
        n = getattr(config, "max_position_embeddings", None)
        return n if isinstance(n, int) and n > 0 else None

    def count_prompt_tokens(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> int:
        """How many tokens ``messages`` (normalised) make once templated: what a call would feed the model.

        A prompt too long for the context by its length alone raises :class:`ContextLengthError` without
        being tokenized (``modelfactory serve`` calls this before it queues a request). A vision-language
        model counts what its processor makes of the conversation, image tokens included."""
        if self.runtime.processor is not None:
            return count_image_prompt(self, list(messages), tools)
        return len(self._tokenize(self.chat_prompt(messages, tools), None))

    def _tokenize(self, prompt: str, requested: int | None) -> list[int]:
        """The prompt's token ids, refused first when its characters alone cannot fit the context."""
        rt = self.runtime
        context = self.context_length
        if context is not None:
            if not rt.chars_per_token:
                try:
                    vocab = rt.tokenizer.get_vocab()
                except Exception:  # a tokenizer that cannot list its vocabulary: the fallback bound
                    vocab = {}
                rt.chars_per_token = longest_token(vocab)
            check_prompt_chars(
                len(prompt), context, rt.chars_per_token, backend=type(self).__name__, max_tokens=requested
            )
        # The template already wrote every special token (bos, role markers): add none on top.
        return [int(i) for i in rt.tokenizer(prompt, add_special_tokens=False)["input_ids"]]

    def _encode(self, req: GenerationRequest) -> _Row:
        """The request's prompt and ids, and the reply budget that fits the context with them (a prompt
        that does not fit raises :class:`ContextLengthError` here, before any generation)."""
        prompt = self.chat_prompt(req.messages, req.tools)
        requested = requested_reply(req.params)
        ids = self._tokenize(prompt, requested)
        default = self.spec.max_new_tokens
        context = self.context_length
        if context is None:
            max_new = requested or default
        else:
            max_new = reply_budget(len(ids), context, requested, default, backend=type(self).__name__)
        return _Row(req, prompt, ids, max_new)

    # ------------------------------------------------------------------ generation

    def _prepare(self, rows: Sequence[_Row]) -> _Prepared:
        """One ``generate`` call for ``rows`` (same params; stops may differ), left-padded to one width."""
        rt = self.runtime
        torch = rt.torch
        width = max(len(r.ids) for r in rows)
        pad = rt.pad_id if rt.pad_id is not None else 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r.ids:
                input_ids[i, width - len(r.ids) :] = torch.tensor(r.ids, dtype=torch.long)
                attention[i, width - len(r.ids) :] = 1
        params = dict(rows[0].req.params)
        logprobs = asked_logprobs(params)  # scored after generation (_reply), not a generate() argument
        for key in LOGPROB_PARAMS:
            params.pop(key, None)
        params.pop("max_new_tokens", None)
        params.pop("max_tokens", None)
        max_new = min(r.max_new for r in rows)  # the same params; a default budget shortened to fit
        temperature = params.pop("temperature", None)
        top_p = params.pop("top_p", None)
        params.pop("seed", None)
        seeds = [r.req.params.get("seed") for r in rows]  # one per row (generate_batch's seeds)
        if "do_sample" in params:
            do_sample = bool(params.pop("do_sample"))
        elif temperature is not None:
            do_sample = temperature > 0
        else:
            do_sample = bool(self.spec.do_sample)
        gen_kwargs: dict[str, Any] = {
            "attention_mask": attention.to(rt.device),
            "max_new_tokens": max_new,
            "do_sample": do_sample,
            "pad_token_id": rt.pad_id,
        }
        # Sampling knobs only when sampling: transformers warns about them on greedy decoding.
        if do_sample:
            if temperature:
                gen_kwargs["temperature"] = float(temperature)
            if top_p is not None:
                gen_kwargs["top_p"] = float(top_p)
        gen_kwargs.update(params)
        seed, row_seeds = None, False
        if any(s is not None for s in seeds):
            if samples_per_row(gen_kwargs, rt.model.generation_config):
                gen_kwargs["logits_processor"] = row_sampler(
                    torch, gen_kwargs, rt.model.generation_config, seeds
                )
                row_seeds = True
            else:
                seed = next(int(s) for s in seeds if s is not None)
        stops = [list(r.req.provider_stop or []) for r in rows]
        stop = None
        if any(stops):
            stop = stop_criteria(rt.tokenizer, width, stops)
            gen_kwargs["stopping_criteria"] = criteria_list(stop)
        return _Prepared(
            prompts=[r.prompt for r in rows],
            input_ids=input_ids.to(rt.device),
            prompt_lens=[len(r.ids) for r in rows],
            gen_kwargs=gen_kwargs,
            seed=seed,
            stop=stop,
            max_new_tokens=max_new,
            stops=stops,
            row_seeds=row_seeds,
            logprobs=logprobs,
        )

    def _run(self, prep: _Prepared, **extra: Any) -> Any:
        """``model.generate`` under the generation lock; a seeded call leaves torch's global generator as it
        was (reseeded for the call where it samples from it, see :class:`_Prepared`).

        A batch of one reuses (and then leaves behind) the KV cache of the shared token prefix with the
        previous such call when ``prompt_cache`` is on; returns the output ids either way.
        """
        with GENERATE_LOCK:
            rt = self.runtime  # weights freed meanwhile are loaded again here
            torch = rt.torch
            kwargs = {**prep.gen_kwargs, **extra}
            reuse = (
                self.spec.prompt_cache
                and prep.input_ids.shape[0] == 1
                and _plain_decoding(kwargs, rt.model.generation_config)
            )
            if reuse:
                cache, prep.cached_tokens = rt.prompt_cache.take(prep.input_ids[0].tolist())
                if cache is not None:
                    kwargs[rt.cache_kwarg] = cache
                kwargs["return_dict_in_generate"] = True
            with torch.inference_mode(), torch_threads(torch, self.spec.num_threads):
                if prep.seed is None and not prep.row_seeds:
                    output = rt.model.generate(prep.input_ids, **kwargs)
                else:
                    devices = [rt.device.index or 0] if rt.device.type == "cuda" else []
                    with torch.random.fork_rng(devices=devices):
                        if prep.seed is not None:
                            torch.manual_seed(prep.seed)
                        output = rt.model.generate(prep.input_ids, **kwargs)
            if not reuse:
                return output
            # generate returns the cache under the name it takes it by (cache / past_key_values)
            rt.prompt_cache.keep(getattr(output, rt.cache_kwarg, None), output.sequences[0].tolist())
            return output.sequences

    def _finish(self, prep: _Prepared, output: Any, row: int = 0) -> tuple[list[int], str, str | None]:
        """A row's generated ids (through its first eos, no padding), finish reason and matched stop."""
        rt = self.runtime
        width = prep.input_ids.shape[1]
        new_ids = [int(t) for t in output[row, width:].tolist()]
        end, finish = len(new_ids), None
        for i, tok_id in enumerate(new_ids):
            if tok_id in rt.eos_ids:
                end, finish = i + 1, "stop"
                break
        matched = None
        if prep.stop is not None and prep.stop.done_at[row] is not None and prep.stop.done_at[row] <= end:
            end, finish, matched = prep.stop.done_at[row], "stop", prep.stop.matched[row]
        if finish is None:
            finish = "length" if end >= prep.max_new_tokens else "stop"
        return new_ids[:end], finish, matched

    def _reply(self, prep: _Prepared, output: Any, row: int, req: GenerationRequest) -> ChatMessage:
        new_ids, finish, matched = self._finish(prep, output, row)
        text = self.runtime.tokenizer.decode(new_ids, skip_special_tokens=True)
        content = trim_at_stop(text, req.stop_sequences) if req.stop_sequences else text
        reply = ChatMessage(
            role="assistant",
            content=content,
            token_usage=TokenUsage(input_tokens=prep.prompt_lens[row], output_tokens=len(new_ids)),
            raw={
                "prompt": prep.prompts[row],
                "generated_token_ids": new_ids,
                "generated_text": text,
                "finish_reason": finish,
                "stop_sequence": matched,
                "cached_prompt_tokens": prep.cached_tokens,
            },
        )
        if prep.logprobs is not None:  # asked for: the reply's tokens scored by one more forward pass
            reply.logprobs = _completions.reply_logprobs(self, prep.prompts[row], new_ids, prep.logprobs)
        if req.tools:
            # A JSON {"name": ..., "arguments": ...} in the text becomes a ToolCall; plain text stays
            # content (smolagents then reports its own parsing error).
            with contextlib.suppress(BackendError):
                self.parse_tool_calls(reply)
        return reply

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        if self.runtime.processor is not None:  # a vision-language model: its processor builds the prompt
            if asked_logprobs(req.params) is not None:
                self.check_logprobs()
            return generate_with_images(self, req)
        prep = self._prepare([self._encode(req)])
        return self._reply(prep, self._run(prep), 0, req)

    def generate_batch(
        self,
        conversations: Sequence[Any],
        stop_sequences: Sequence[str] | Sequence[Sequence[str] | None] | None = None,
        response_format: Any = None,
        tools_to_call_from: list[Any] | None = None,
        grammar: Any = None,
        *,
        batch_size: int | None = None,
        return_exceptions: bool = False,
        seeds: Sequence[int | None] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """Generate a reply to each conversation, ``batch_size`` rows per ``generate`` call (left-padded).

        ``stop_sequences``: one list for every row, or one list (or ``None``) per row; each row stops on
        its own. ``kwargs`` (temperature, max_tokens, seed, ...) apply to every row; ``seeds`` instead of
        ``seed`` gives one seed (or ``None``) per row. Greedy rows give the same tokens as one-by-one calls
        up to floating-point noise of padded batches (see the tests), and so do seeded sampled rows: each
        draws from its own generator, so its reply depends on its seed, not on its batch-mates (one
        ``seed`` for every row: each row is sampled as if called alone with it). ``return_exceptions``: a row
        whose conversation is invalid or too long for the context (:class:`ContextLengthError`, refused
        before any generation) gets its exception instead of a reply, and so does a row that fails when a
        failed ``generate`` call is run again row by row; the other rows get their replies.
        With the response cache on, each row is looked up (and stored) as a single call would be.
        """
        conversations = list(conversations)
        n = len(conversations)
        stop_rows = row_stops(stop_sequences, n)
        row_kwargs = _per_row_seeds(kwargs, seeds, n)
        results: list[Any] = [None] * n
        rows: list[tuple[int, _Row]] = []
        for i, (conv, stops) in enumerate(zip(conversations, stop_rows, strict=True)):
            try:
                req = self._request(conv, stops, grammar, response_format, tools_to_call_from, row_kwargs[i])
                cached = self._cache_lookup(req)  # the response cache, row by row: a hit is not generated
                if cached is not None:
                    results[i] = cached
                    continue
                if (
                    self.runtime.processor is not None
                ):  # a vision-language model: each row through its processor
                    if asked_logprobs(req.params) is not None:
                        self.check_logprobs()
                    results[i] = generate_with_images(self, req)
                    self._cache_store(req, results[i])
                    continue
                rows.append((i, self._encode(req)))
            except Exception as exc:
                err = row_error(self, exc, i)
                if not return_exceptions:
                    raise err from (None if err is exc else exc)
                results[i] = err
        size = batch_size or self.spec.batch_size or max(1, len(rows))
        # Similar lengths together (less padding); results go back in the caller's order.
        rows.sort(key=lambda item: len(item[1].ids), reverse=True)
        for c, start in enumerate(range(0, len(rows), size)):
            chunk = rows[start : start + size]
            replies: list[ChatMessage | Exception]
            try:
                replies = list(self._generate_rows([r for _, r in chunk], c))
            except Exception as exc:
                err = exc if isinstance(exc, ModelFactoryError) else self._backend_error(exc)
                if not return_exceptions:
                    raise err from (None if err is exc else exc)
                # One row may have failed the whole generate call: run each alone, so the culprit gets its
                # error and its batch-mates their replies (not its error row, repeated on every resume).
                replies = [err] if len(chunk) == 1 else [self._row_or_error(r, c) for _, r in chunk]
            for (i, _), reply in zip(chunk, replies, strict=True):
                results[i] = reply
        return results

    def _generate_rows(self, rows: list[_Row], chunk: int) -> list[ChatMessage]:
        """One ``generate`` call for ``rows`` (chunk number ``chunk`` of a batch), each reply stored in the
        response cache."""
        prep = self._prepare(rows)
        if prep.seed is not None:
            prep.seed += chunk  # chunks must not repeat each other's random draws
        output = self._run(prep)
        replies = [self._reply(prep, output, k, r.req) for k, r in enumerate(rows)]
        for r, reply in zip(rows, replies, strict=True):
            self._cache_store(r.req, reply)
        return replies

    def _row_or_error(self, row: _Row, chunk: int) -> ChatMessage | Exception:
        """``row`` generated alone, or its error."""
        try:
            return self._generate_rows([row], chunk)[0]
        except Exception as exc:
            return exc if isinstance(exc, ModelFactoryError) else self._backend_error(exc)

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        if asked_logprobs(req.params) is not None:
            raise UnsupportedFeatureError(
                "logprobs: TransformersModel does not stream them; call the model without streaming "
                "(model(messages, logprobs=True)) or drop logprobs/top_logprobs"
            )
        if self.runtime.processor is not None:  # a vision-language model: its processor builds the prompt
            yield from stream_with_images(self, req)
            return
        prep = self._prepare([self._encode(req)])
        rt = self.runtime
        streamer = settled_streamer(rt.tokenizer, req.stop_sequences)
        cancel = threading.Event()
        criteria = prep.gen_kwargs.pop("stopping_criteria", None) or criteria_list()
        criteria.append(cancel_criteria(cancel))
        output = yield from stream_generation(
            lambda: self._run(prep, streamer=streamer, stopping_criteria=criteria), streamer, cancel
        )
        new_ids, _, _ = self._finish(prep, output)
        yield ChatMessageStreamDelta(
            token_usage=TokenUsage(input_tokens=prep.prompt_lens[0], output_tokens=len(new_ids))
        )

    # ------------------------------------------------------------------ completions and embeddings

    def complete_text(self, prompt: str | Sequence[int], **kwargs: Any) -> TextCompletion:
        """A plain-text completion of ``prompt`` (no chat template), with log-probabilities if asked:
        :func:`._completions.complete_text` (``/v1/completions`` of ``modelfactory serve``)."""
        with backend_errors(self):
            return _completions.complete_text(self, prompt, **kwargs)

    def check_logprobs(self) -> None:
        """Refuses (:class:`UnsupportedFeatureError`) when this model cannot score its replies' tokens
        (``logprobs=True``): a vision-language model, whose prompt holds images. Loads the weights."""
        if self.runtime.processor is not None:
            raise UnsupportedFeatureError(
                "logprobs: TransformersModel scores the replies of text models only, not of a "
                "vision-language model (its prompt holds images): drop logprobs/top_logprobs"
            )

    def embed(self, inputs: Sequence[str | Sequence[int]]) -> Embeddings:
        """Mean-pooled last hidden states, one vector per input (``/v1/embeddings``)."""
        with backend_errors(self):
            return _completions.embed(self, inputs)


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def torch_threads(torch: Any, n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for one generate call, then torch's setting as it was (``None``: as is).

    Set in the thread that runs ``generate`` (a stream's worker thread too): with torch's OpenMP backend
    the setting belongs to the calling thread (a CPU build of torch 2.13: set in one thread, another still
    reads its own). Put back after the call, since other code on that thread (another model, the user's
    own torch work) did not ask for it. Costs ~2 µs; nothing happens when ``n`` is already the setting.
    """
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _plain_decoding(gen_kwargs: dict[str, Any], defaults: Any) -> bool:
    """One sequence, cache on: the cases where a kept prefix cache can be handed to ``generate`` as is
    (beams or several returned sequences expand the batch; ``use_cache=False`` keeps none). A setting
    not passed comes from the model's own ``generation_config`` (``defaults``), as in ``generate``."""

    def setting(name: str) -> Any:
        return gen_kwargs[name] if name in gen_kwargs else getattr(defaults, name, None)

    return (
        setting("use_cache") is not False
        and (setting("num_beams") or 1) == 1
        and (setting("num_return_sequences") or 1) == 1
    )


def _per_row_seeds(
    kwargs: dict[str, Any], seeds: Sequence[int | None] | None, n: int
) -> list[dict[str, Any]]:
    """Each row's call kwargs: ``kwargs``, plus row ``i``'s ``seeds[i]`` when given (None: no seed of its
    own, the model's configured one if any)."""
    if seeds is None:
        return [kwargs] * n
    if isinstance(seeds, (str, bytes)) or len(seeds) != n:
        raise MessageError(f"seeds has {len(seeds)} values for {n} conversations: give one per conversation")
    if "seed" in kwargs:
        raise MessageError("give seed (one for every row) or seeds (one per row), not both")
    return [kwargs if seed is None else {**kwargs, "seed": seed} for seed in seeds]
