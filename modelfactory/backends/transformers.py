"""``TransformersModel``: a causal LM run in-process with 🤗 transformers (hub id, local dir or built-in).

torch and transformers are imported inside the functions that need them, and the weights are loaded on
the first call, so building (or validating) a config costs nothing. Stop sequences are enforced *during*
generation by decoding only the new tokens, which catches stops that span several tokens and never
matches text of the prompt.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ..errors import BackendError, MessageError, MissingDependencyError, Problem, UnsupportedFeatureError
from ..messages import ChatMessage, ChatMessageStreamDelta, TokenUsage, trim_at_stop
from ..model import GenerationRequest, Model
from ..settings import ModelSpec

__all__ = ["BUILTIN_MODELS", "TransformersModel", "TransformersSpec", "builtin_path", "stop_state"]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
# ``builtin:<name>`` -> directory under modelfactory/assets (built by scripts/build_tiny_model.py).
BUILTIN_MODELS: dict[str, str] = {"tiny-llama": "tiny-llama"}
BUILTIN_PREFIX = "builtin:"
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# from_pretrained arguments about *where* files come from: the tokenizer needs them as much as the model.
_HUB_KWARGS = ("cache_dir", "token", "local_files_only", "force_download", "proxies", "subfolder")
_TRUE = {"1", "true", "yes", "on"}


def builtin_path(model_id: str) -> Path | None:
    """The asset directory of a ``builtin:<name>`` id, or ``None`` for any other id."""
    if not model_id.startswith(BUILTIN_PREFIX):
        return None
    return ASSETS / BUILTIN_MODELS[model_id[len(BUILTIN_PREFIX) :]]


def _looks_like_path(model_id: str) -> bool:
    return model_id.startswith(("/", "./", "../", "~")) or os.path.isabs(model_id)


def _hub_offline() -> bool:
    """Read at call time: huggingface_hub reads HF_HUB_OFFLINE only once, when it is first imported."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


class TransformersSpec(ModelSpec):
    model_id: str = Field(
        description="a hub id (HuggingFaceTB/SmolLM-135M-Instruct), a local directory, or builtin:tiny-llama"
    )
    revision: str | None = Field(None, description="hub branch, tag or commit")
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype; auto: float32 on CPU/MPS, bfloat16 on CUDA"
    )
    max_new_tokens: int = Field(128, gt=0, description="tokens to generate; max_tokens overrides it")
    do_sample: bool | None = Field(
        None, description="sample instead of greedy decoding; unset: sample when temperature > 0"
    )
    trust_remote_code: bool = False
    chat_template: str | None = Field(None, description="a Jinja chat template replacing the tokenizer's")
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for AutoModelForCausalLM.from_pretrained"
    )

    @field_validator("model_id")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value.startswith(BUILTIN_PREFIX):
            name = value[len(BUILTIN_PREFIX) :]
            if name not in BUILTIN_MODELS:
                import difflib

                close = difflib.get_close_matches(name, list(BUILTIN_MODELS), n=1, cutoff=0.4)
                hint = f"did you mean '{BUILTIN_PREFIX}{close[0]}'? " if close else ""
                known = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_MODELS)
                raise ValueError(f"unknown built-in model {name!r}; {hint}built-ins: {known}")
        elif _looks_like_path(value) and not Path(value).expanduser().is_dir():
            raise ValueError(f"no such directory: {value!r} (give a local model directory or a hub id)")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE_RE.match(value):
            raise ValueError("must be one of auto, cpu, cuda, cuda:N, mps")
        return value

    def problems(self) -> list[Problem]:
        out = []
        if self.do_sample is False and self.temperature:
            out.append(
                Problem(
                    "do_sample",
                    f"do_sample is false but temperature is {self.temperature}",
                    "drop one of them: temperature > 0 samples, do_sample=false decodes greedily",
                )
            )
        if self.do_sample and self.temperature == 0:
            out.append(
                Problem(
                    "temperature",
                    "temperature 0 with do_sample=true",
                    "temperature 0 means greedy: unset do_sample, or give temperature > 0",
                )
            )
        if "max_new_tokens" in self.generation_kwargs:
            out.append(
                Problem(
                    "generation_kwargs.max_new_tokens",
                    "set twice",
                    "use model.max_new_tokens (or max_tokens) instead",
                )
            )
        return out

    def source(self) -> str:
        """What from_pretrained loads: the asset dir of a built-in, the expanded local dir, or the hub id."""
        path = builtin_path(self.model_id)
        if path is not None:
            return str(path)
        return str(Path(self.model_id).expanduser()) if _looks_like_path(self.model_id) else self.model_id


@dataclass
class _Runtime:
    torch: Any
    tokenizer: Any
    model: Any
    device: Any
    eos_ids: frozenset[int]
    pad_id: int | None


@dataclass
class _Prepared:
    prompt: str
    input_ids: Any  # (1, prompt_len) tensor on the model's device
    gen_kwargs: dict[str, Any]
    seed: int | None
    stop: Any  # the _StopOnText criteria, or None
    max_new_tokens: int


class TransformersModel(Model):
    """Chat with a local causal LM. ``builtin:tiny-llama`` ships with the package and runs offline."""

    Spec = TransformersSpec
    spec: TransformersSpec

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._load_lock = threading.Lock()
        # One generation at a time per model: a seeded call reseeds torch's global RNG.
        self._generate_lock = threading.Lock()
        self._runtime: _Runtime | None = None

    # ------------------------------------------------------------------ loading

    @property
    def runtime(self) -> _Runtime:
        """Tokenizer and weights, loaded on first use (thread-safe, once)."""
        if self._runtime is None:
            with self._load_lock:
                if self._runtime is None:
                    self._runtime = self._load()
        return self._runtime

    @property
    def tokenizer(self) -> Any:
        return self.runtime.tokenizer

    @property
    def model(self) -> Any:
        return self.runtime.model

    def _load(self) -> _Runtime:
        torch, transformers = _import_backend(type(self).__name__)
        spec = self.spec
        device = self._device(torch)
        dtype = self._dtype(torch, device)
        source = spec.source()
        local = Path(source).is_dir()
        hub_kwargs: dict[str, Any] = {"revision": spec.revision}
        hub_kwargs.update({k: spec.model_kwargs[k] for k in _HUB_KWARGS if k in spec.model_kwargs})
        if _hub_offline() and not local:
            hub_kwargs["local_files_only"] = True
        try:
            with _quiet_loading(transformers, local):
                tokenizer = transformers.AutoTokenizer.from_pretrained(
                    source, trust_remote_code=spec.trust_remote_code, **hub_kwargs
                )
                model = transformers.AutoModelForCausalLM.from_pretrained(
                    source,
                    dtype=dtype,
                    trust_remote_code=spec.trust_remote_code,
                    **{**spec.model_kwargs, **hub_kwargs},
                )
        except (OSError, ValueError) as exc:
            raise self._load_error(exc, local) from None
        model.to(device)
        model.eval()
        if spec.chat_template is not None:
            tokenizer.chat_template = spec.chat_template
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = model.generation_config.pad_token_id
        if pad_id is None and eos_ids:
            pad_id = min(eos_ids)
        return _Runtime(torch, tokenizer, model, device, eos_ids, pad_id)

    def _load_error(self, exc: Exception, local: bool) -> BackendError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        mid = self.model_id
        if local:
            message = f"cannot load the model directory {self.spec.source()!r}: {first}"
        elif _hub_offline():
            message = (
                f"'{mid}' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it. "
                f"Fix: run once online (unset HF_HUB_OFFLINE) to download it, e.g. "
                f"`hf download {mid}`; or set model.model_id to a local directory holding the weights; "
                f"or use model.model_id=builtin:tiny-llama, which ships with modelfactory. "
                f"(transformers said: {first})"
            )
        else:
            message = (
                f"cannot load '{mid}' from the Hugging Face Hub or the local cache ({first}). "
                f"Fix: check the id and the network (gated models need HF_TOKEN); offline, download it "
                f"first and set HF_HUB_OFFLINE=1, or set model.model_id to a local directory."
            )
        return BackendError(self.redact(message), model_id=mid, backend=type(self).__name__)

    def _device(self, torch: Any) -> Any:
        wanted = self.spec.device
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        elif wanted.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(
                f"device {wanted!r} was asked for but torch sees no CUDA GPU (set model.device=cpu or auto)",
                model_id=self.model_id,
                backend=type(self).__name__,
            )
        elif wanted == "mps" and not torch.backends.mps.is_available():
            raise BackendError(
                "device 'mps' was asked for but is not available (set model.device=cpu or auto)",
                model_id=self.model_id,
                backend=type(self).__name__,
            )
        return torch.device(wanted)

    def _dtype(self, torch: Any, device: Any) -> Any:
        name = self.spec.dtype
        if name == "auto":
            if device.type != "cuda":
                return torch.float32
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return getattr(torch, name)

    # ------------------------------------------------------------------ generation

    def chat_prompt(self, messages: Sequence[dict[str, Any]]) -> str:
        """The prompt text the tokenizer's chat template builds from normalised messages."""
        tok = self.tokenizer
        if not tok.chat_template:
            raise BackendError(
                "the tokenizer has no chat template; set model.chat_template to a Jinja template",
                model_id=self.model_id,
                backend=type(self).__name__,
            )
        text = tok.apply_chat_template(
            [_text_message(m, i) for i, m in enumerate(messages)],
            tokenize=False,
            add_generation_prompt=True,
        )
        return str(text)

    def _prepare(self, req: GenerationRequest) -> _Prepared:
        rt = self.runtime
        prompt = self.chat_prompt(req.messages)
        # The template already wrote every special token (bos, role markers): add none on top.
        enc = rt.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        input_ids = enc["input_ids"].to(rt.device)
        params = dict(req.params)
        max_new = params.pop("max_new_tokens", None)
        max_tokens = params.pop("max_tokens", None)
        max_new = int(max_new or max_tokens or self.spec.max_new_tokens)
        temperature = params.pop("temperature", None)
        top_p = params.pop("top_p", None)
        seed = params.pop("seed", None)
        if "do_sample" in params:
            do_sample = bool(params.pop("do_sample"))
        elif temperature is not None:
            do_sample = temperature > 0
        else:
            do_sample = bool(self.spec.do_sample)
        gen_kwargs: dict[str, Any] = {
            "attention_mask": enc["attention_mask"].to(rt.device),
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
        stop = None
        if req.provider_stop:
            stop = _stop_criteria(rt.tokenizer, input_ids.shape[1], req.provider_stop)
            gen_kwargs["stopping_criteria"] = _criteria_list(stop)
        return _Prepared(prompt, input_ids, gen_kwargs, seed, stop, max_new)

    def _run(self, prep: _Prepared, **extra: Any) -> Any:
        """``model.generate`` under the per-model lock, with torch's RNG reseeded (and restored) if seeded."""
        rt = self.runtime
        torch = rt.torch
        with self._generate_lock, torch.inference_mode():
            if prep.seed is None:
                return rt.model.generate(prep.input_ids, **prep.gen_kwargs, **extra)
            devices = [rt.device.index or 0] if rt.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(prep.seed))
                return rt.model.generate(prep.input_ids, **prep.gen_kwargs, **extra)

    def _finish(self, prep: _Prepared, output: Any) -> tuple[list[int], str]:
        """The generated ids (through the first eos, no padding) and the finish reason."""
        rt = self.runtime
        new_ids = [int(t) for t in output[0, prep.input_ids.shape[1] :].tolist()]
        for i, tok_id in enumerate(new_ids):
            if tok_id in rt.eos_ids:
                return new_ids[: i + 1], "stop"
        if prep.stop is not None and prep.stop.matched is not None:
            return new_ids, "stop"
        return new_ids, "length" if len(new_ids) >= prep.max_new_tokens else "stop"

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        prep = self._prepare(req)
        output = self._run(prep)
        new_ids, finish = self._finish(prep, output)
        text = self.runtime.tokenizer.decode(new_ids, skip_special_tokens=True)
        content = trim_at_stop(text, req.stop_sequences) if req.stop_sequences else text
        return ChatMessage(
            role="assistant",
            content=content,
            token_usage=TokenUsage(input_tokens=int(prep.input_ids.shape[1]), output_tokens=len(new_ids)),
            raw={
                "prompt": prep.prompt,
                "generated_token_ids": new_ids,
                "generated_text": text,
                "finish_reason": finish,
                "stop_sequence": prep.stop.matched if prep.stop is not None else None,
            },
        )

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        prep = self._prepare(req)
        rt = self.runtime
        streamer = _streamer(rt.tokenizer, req.stop_sequences)
        cancel = threading.Event()
        criteria = prep.gen_kwargs.pop("stopping_criteria", None) or _criteria_list()
        criteria.append(_cancel_criteria(cancel))
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["output"] = self._run(prep, streamer=streamer, stopping_criteria=criteria)
            except BaseException as exc:  # handed to the consumer below
                result["error"] = exc
                streamer.end()  # unblock the consumer

        thread = threading.Thread(target=work, name="modelfactory-generate", daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if piece:
                    yield ChatMessageStreamDelta(content=piece)
        finally:
            cancel.set()  # a consumer that stops early also stops the generation
            thread.join()
        if "error" in result:
            raise result["error"]
        new_ids, _ = self._finish(prep, result["output"])
        yield ChatMessageStreamDelta(
            token_usage=TokenUsage(input_tokens=int(prep.input_ids.shape[1]), output_tokens=len(new_ids))
        )


# --------------------------------------------------------------------------- helpers


def _import_backend(backend: str) -> tuple[Any, Any]:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "transformers", backend) from None
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("transformers", "transformers", backend) from None
    return torch, transformers


@contextlib.contextmanager
def _quiet_loading(transformers: Any, local: bool) -> Iterator[None]:
    """Hide the "Loading weights" bar for local files; keep it (and download bars) for hub ids."""
    logging = transformers.utils.logging
    if not local or not logging.is_progress_bar_enabled():
        yield
        return
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.enable_progress_bar()


def _text_message(message: dict[str, Any], index: int) -> dict[str, Any]:
    """Role + plain-text content: what every chat template accepts. Images are refused clearly."""
    content = message.get("content")
    if content is None:
        content = ""
    elif not isinstance(content, str):
        kinds = sorted({str(p.get("type")) for p in content if p.get("type") != "text"})
        if kinds:
            raise UnsupportedFeatureError(
                f"messages[{index}]: TransformersModel takes text only, got {', '.join(kinds)} parts "
                "(use an API backend with a vision model for images)"
            )
        content = "\n".join(str(p.get("text", "")) for p in content)
    role = message.get("role")
    if not isinstance(role, str):
        raise MessageError(f"messages[{index}]: role must be a string")
    return {"role": role, "content": content}


def stop_state(text: str, stops: Sequence[str]) -> tuple[int, bool]:
    """How much of ``text`` is settled under the stop contract, whatever text follows it.

    Returns ``(n, final)``. ``final``: the reply is ``text[:n]`` however generation goes on (a stop
    occurs at ``n`` and no other stop can still begin before it). Otherwise ``text[:n]`` is a prefix of
    the reply: text from ``n`` on may yet turn out to start a stop. Stopping only when final makes the
    reply equal ``trim_at_stop(unstopped_text)`` even for overlapping stops (``["t", " town "]`` on
    "... town sat": cut before " town ", though "t" completes first).
    """
    cut = len(trim_at_stop(text, stops))
    found = cut < len(text)
    pending = cut
    for s in stops:
        for q in range(max(0, len(text) - len(s) + 1), pending):
            if s.startswith(text[q:]):
                pending = q
                break
    if found and pending == cut:
        return cut, True
    return pending, False


def _stop_criteria(tokenizer: Any, prompt_len: int, stops: Sequence[str]) -> Any:
    """A ``StoppingCriteria`` that decodes only the new tokens and stops once the reply is settled."""
    import torch
    from transformers import StoppingCriteria

    class StopOnText(StoppingCriteria):  # type: ignore[misc]
        def __init__(self) -> None:
            self.matched: str | None = None

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = []
            for row in input_ids:
                text = tokenizer.decode(row[prompt_len:].tolist(), skip_special_tokens=True)
                n, final = stop_state(text, stops)
                if final and self.matched is None:
                    self.matched = next(s for s in stops if text.startswith(s, n))
                done.append(final)
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopOnText()


def _cancel_criteria(event: threading.Event) -> Any:
    import torch
    from transformers import StoppingCriteria

    class Cancelled(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full(
                (input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device
            )

    return Cancelled()


def _criteria_list(*criteria: Any) -> Any:
    from transformers import StoppingCriteriaList

    return StoppingCriteriaList(list(criteria))


def _streamer(tokenizer: Any, stops: Sequence[str]) -> Any:
    """A ``TextIteratorStreamer`` whose pieces add up to exactly the non-streamed reply.

    The stock one flushes its cache at each newline and re-decodes from there, which drops the leading
    space of SentencePiece tokens. This one always decodes all new tokens, emits only text that
    :func:`stop_state` has settled (never a stop, nor text a stop may still claim), and holds back an
    incomplete UTF-8 character (decoded as U+FFFD) until its next byte arrives.
    """
    from transformers import TextIteratorStreamer

    class Streamer(TextIteratorStreamer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.text = ""
            self.finished = False

        def _emit_upto(self, n: int) -> None:
            if n > self.print_len:
                piece, self.print_len = self.text[self.print_len : n], n
                self.on_finalized_text(piece)

        def put(self, value: Any) -> None:
            if len(value.shape) > 1:
                value = value[0]
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            if self.finished:
                return
            self.token_cache.extend(value.tolist())
            self.text = str(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
            n, self.finished = stop_state(self.text, stops)
            self._emit_upto(n if self.finished else min(n, len(self.text.rstrip("\ufffd"))))

        def end(self) -> None:
            self.text = str(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
            self._emit_upto(len(trim_at_stop(self.text, stops)))
            self.on_finalized_text("", stream_end=True)

    return Streamer()
