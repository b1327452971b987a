"""What the in-process backends (transformers, llama.cpp, OpenVINO) share: the weight cache and the
load/free lifecycle (:class:`WeightCache`, :class:`LocalWeights`), the text-only rows every chat template
accepts, the tools block for a template that does not render ``tools=`` itself, and the context check
that refuses a prompt too long for the model before it costs memory.

One copy here, so the backends load and free alike, refuse images alike, show tools to a model in the same
words and refuse long prompts with the same error. (Their stops and streams share
:func:`modelfactory.messages.settled_prefix`.)
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from ..errors import ContextLengthError, MessageError, UnsupportedFeatureError

__all__ = [
    "FALLBACK_CHARS_PER_TOKEN",
    "LOGPROB_PARAMS",
    "LocalWeights",
    "WeightCache",
    "check_prompt_chars",
    "asked_logprobs",
    "longest_token",
    "reply_budget",
    "requested_reply",
    "text_message",
    "tools_block",
    "usable_cpus",
    "with_tools_block",
]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: taskset, a container's cpuset), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# The characters-per-token bound when a tokenizer's vocabulary cannot be read: no vocabulary in use has
# many longer tokens. Only a fallback: the bound of a known vocabulary is exact (see longest_token).
FALLBACK_CHARS_PER_TOKEN = 64


# --------------------------------------------------------------------------- the weight cache and lifecycle


class Loaded(Protocol):
    """A loaded runtime (weights, tokenizer, ...): its weight-cache key, and whether it was freed."""

    key: tuple[Any, ...]
    freed: bool


R = TypeVar("R", bound=Loaded)
S = TypeVar("S", bound="LocalWeights[Any]")


class WeightCache(Generic[R]):
    """The process-wide cache of one local backend: models built with the same load key share one loaded
    runtime (a sweep over generation parameters loads the weights once), loaded once however many
    threads ask. ``release`` drops the weights of each runtime taken out of the cache; ``after``, when
    given, runs once after a release of one or more (e.g. one ``gc.collect`` for all of them)."""

    def __init__(
        self, release: Callable[[R], None], after: Callable[[Sequence[R]], None] | None = None
    ) -> None:
        self._release_one = release
        self._after = after
        self._cache: dict[tuple[Any, ...], R] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[Any, ...], threading.Lock] = {}

    def acquire(self, key: tuple[Any, ...], load: Callable[[], R]) -> R:
        """The cached runtime for ``key``, or the one ``load()`` builds."""
        with self._lock:
            rt = self._cache.get(key)
            if rt is not None and not rt.freed:
                return rt
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # two threads building the same model load it once
            with self._lock:
                rt = self._cache.get(key)
            if rt is None or rt.freed:
                rt = load()
                with self._lock:
                    self._cache[key] = rt
            return rt

    def get(self, key: tuple[Any, ...]) -> R | None:
        """The runtime loaded for ``key``, if any (loads nothing)."""
        with self._lock:
            return self._cache.get(key)

    def items(self) -> list[tuple[tuple[Any, ...], R]]:
        with self._lock:
            return list(self._cache.items())

    def discard(self, rt: R) -> None:
        """Drop ``rt`` from the cache and release it."""
        with self._lock:
            if self._cache.get(rt.key) is rt:
                del self._cache[rt.key]
        self._release([rt])

    def _release(self, rts: Sequence[R]) -> None:
        for rt in rts:
            self._release_one(rt)
        if self._after is not None:
            self._after(rts)

    def take_all(self) -> list[R]:
        """Empty the cache; the runtimes it held (not released: the caller decides how)."""
        with self._lock:
            rts = list(self._cache.values())
            self._cache.clear()
            self._key_locks.clear()
        return rts

    def clear(self) -> int:
        """Release every cached runtime; how many. Models load again on their next call."""
        rts = self.take_all()
        self._release(rts)
        return len(rts)


class LocalWeights(Generic[R]):
    """The load/free lifecycle of a local model (a mixin of its ``Model`` class): ``runtime`` loads on first
    use (through the backend's :class:`WeightCache`), ``load()`` loads now, ``free()`` releases the weights
    for every model sharing them, and a later call loads them again.

    A backend gives ``weights`` (its cache), ``_runtime_key`` (the load key; importing the backend's
    library first, so a missing one names its extra, cached or not) and ``_load_runtime(key)``.
    """

    weights: ClassVar[WeightCache[Any]]
    _runtime: R | None = None

    def _runtime_key(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def _load_runtime(self, key: tuple[Any, ...]) -> R:
        raise NotImplementedError

    @property
    def runtime(self) -> R:
        """The loaded runtime: loaded on first use, shared by the models with the same load key."""
        rt = self._runtime
        if rt is None or rt.freed:
            key = self._runtime_key()
            rt = self._runtime = self.weights.acquire(key, lambda: self._load_runtime(key))
        return rt

    def load(self: S) -> S:
        """Load (or take from the cache) the weights now instead of on the first call; returns the model."""
        _ = self.runtime
        return self

    @property
    def is_loaded(self) -> bool:
        return self._runtime is not None and not self._runtime.freed

    def free(self) -> None:
        """Release the weights: from the process cache and from every model sharing them (a later call
        loads them again)."""
        rt, self._runtime = self._runtime, None
        if rt is not None and not rt.freed:
            self.weights.discard(rt)


def text_message(message: dict[str, Any], index: int, owner: str) -> dict[str, Any]:
    """Role + plain-text content: what every chat template accepts. Images are refused clearly
    (``owner``: the model class the message says takes text only)."""
    content = message.get("content")
    if content is None:
        content = ""
    elif not isinstance(content, str):
        kinds = sorted({str(p.get("type")) for p in content if p.get("type") != "text"})
        if kinds:
            raise UnsupportedFeatureError(
                f"messages[{index}]: {owner} takes text only, got {', '.join(kinds)} parts "
                "(use an API backend with a vision model for images)"
            )
        content = "\n".join(str(p.get("text", "")) for p in content)
    role = message.get("role")
    if not isinstance(role, str):
        raise MessageError(f"messages[{index}]: role must be a string")
    return {"role": role, "content": content}


def tools_block(tools: Sequence[dict[str, Any]]) -> str:
    """The tools section for a chat template that does not render ``tools=`` itself."""
    lines = [
        "You can call these tools. To call one, answer with only a JSON object "
        '{"name": <tool name>, "arguments": {<argument>: <value>, ...}}.',
        "Tools:",
    ]
    lines += [json.dumps(t.get("function", t), sort_keys=True) for t in tools]
    return "\n".join(lines)


def with_tools_block(rows: list[dict[str, Any]], tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the tools block prepended to the system message (or as a new first one)."""
    block = tools_block(tools)
    if rows and rows[0]["role"] == "system":
        return [{"role": "system", "content": f"{rows[0]['content']}\n\n{block}"}, *rows[1:]]
    return [{"role": "system", "content": block}, *rows]


# --------------------------------------------------------------------------- the context check
#
# Why it exists: a prompt far past the context used to go to the tokenizer and then to the model, whose
# attention over the whole sequence grows with its square: a 200 KB prompt took a process to 18 GB and was
# OOM-killed. The check runs in every call path of both backends (generate, streams, generate_batch rows,
# count_prompt_tokens, which modelfactory serve's pre-check calls): first a bound from the prompt's length
# in characters (no tokenizing: a 10 MB prompt is refused in microseconds), then the exact token count.


def longest_token(pieces: Iterable[str]) -> int:
    """The most characters one token of a vocabulary can cover: its longest piece as the vocabulary spells
    it (a byte-level piece spells each byte with one character, a SentencePiece one each character, a
    byte-fallback ``<0x0A>`` covers one byte in six), so a text of N characters has at least
    ``N / longest_token`` tokens. :data:`FALLBACK_CHARS_PER_TOKEN` for an empty vocabulary."""
    return max((len(p) for p in pieces), default=0) or FALLBACK_CHARS_PER_TOKEN


def check_prompt_chars(
    chars: int,
    context: int,
    chars_per_token: int,
    *,
    backend: str,
    max_tokens: int | None = None,
    context_key: str = "",
) -> None:
    """Refuse a prompt of ``chars`` characters that cannot fit ``context`` tokens whatever its tokens are
    (more than ``context * chars_per_token`` characters), before tokenizing it."""
    if chars > context * chars_per_token:
        raise ContextLengthError(
            context=context,
            prompt_chars=chars,
            min_tokens=-(-chars // chars_per_token),
            max_tokens=max_tokens,
            backend=backend,
            context_key=context_key,
        )


def requested_reply(params: Mapping[str, Any]) -> int | None:
    """The reply budget a call (or the config's generation defaults) asks for: ``max_new_tokens`` or
    ``max_tokens``; None when neither is set (the backend's own default applies)."""
    for key in ("max_new_tokens", "max_tokens"):
        value = params.get(key)
        if value:
            return int(value)
    return None


LOGPROB_PARAMS = ("logprobs", "top_logprobs")  # a call's per-token log-probabilities: not sampling knobs


def asked_logprobs(params: Mapping[str, Any]) -> int | None:
    """How many alternatives per reply token a call's ``logprobs=True, top_logprobs=k`` asks for (0 without
    ``top_logprobs``), or None when it asks for no logprobs (``logprobs`` absent or false: nothing is
    computed). As at OpenAI, ``top_logprobs`` without ``logprobs=True`` is refused, never ignored."""
    asked, top = params.get("logprobs"), params.get("top_logprobs")
    if asked is not None and not isinstance(asked, bool):
        raise MessageError(f"logprobs must be true or false, got {asked!r}")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 0):
        raise MessageError(f"top_logprobs must be a whole number >= 0, got {top!r}")
    if not asked:
        if top is not None:
            raise MessageError("top_logprobs needs logprobs=True: pass both, or drop top_logprobs")
        return None
    return int(top or 0)


def reply_budget(
    prompt_tokens: int,
    context: int,
    requested: int | None,
    default: int,
    *,
    backend: str,
    context_key: str = "",
) -> int:
    """How many tokens to generate after a prompt of ``prompt_tokens``: the ``requested`` budget if prompt
    and reply fit ``context`` (else :class:`ContextLengthError`, as OpenAI answers); without one, the
    backend's ``default`` shortened to the room left, so a default never refuses a prompt that fits. A
    prompt that leaves no room for one token is refused either way."""
    if prompt_tokens + (requested or 1) > context:
        raise ContextLengthError(
            context=context,
            prompt_tokens=prompt_tokens,
            max_tokens=requested,
            backend=backend,
            context_key=context_key,
        )
    return requested if requested else min(default, context - prompt_tokens)


def tool_call_schema(tools: Sequence[dict[str, Any]], choice: Any) -> dict[str, Any]:
    """The JSON schema of one call of a tool (what a local backend constrains a required call to): ``{"name": <a tool>, "arguments": <its parameters>}``."""
    if isinstance(choice, dict):  # OpenAI's {"type": "function", "function": {"name": ...}}
        wanted = (choice.get("function") or {}).get("name")
        tools = [t for t in tools if t.get("function", t).get("name") == wanted]
        if not tools:
            raise MessageError(f"tool_choice names {wanted!r}, which is not among the tools given")
    elif choice != "required":
        raise MessageError(
            f"tool_choice must be 'auto', 'required' or {{'function': {{'name': ...}}}}, got {choice!r}"
        )
    options = []
    for tool in tools:
        fn = tool.get("function", tool)
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": fn["name"]}, "arguments": params},
                "required": ["name", "arguments"],
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}
