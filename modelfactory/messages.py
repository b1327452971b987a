"""Chat messages in and out of every backend, and the stop-sequence contract.

Inputs are accepted loosely (dicts, our ``ChatMessage``, smolagents' message objects) and normalised
once into the OpenAI wire shape, so each backend only ever sees one format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .errors import MessageError

__all__ = [
    "DEFAULT_ROLE_CONVERSIONS",
    "ChatMessage",
    "ChatMessageStreamDelta",
    "ChatMessageToolCall",
    "ChatMessageToolCallFunction",
    "ChatMessageToolCallStreamDelta",
    "GenerationRequest",
    "MessageRole",
    "StopFilter",
    "StreamShaper",
    "TokenUsage",
    "ToolCall",
    "ToolCallFunction",
    "ToolCallFunctionDelta",
    "ToolCallStreamDelta",
    "agglomerate_stream_deltas",
    "normalize_messages",
    "normalize_stop_sequences",
    "settled_prefix",
    "trim_at_stop",
]


class MessageRole(str, Enum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL_CALL = "tool-call"
    TOOL_RESPONSE = "tool-response"

    @classmethod
    def roles(cls) -> list[str]:
        return [r.value for r in cls]


# Providers only know system/user/assistant(/tool); agent frameworks add tool-call/tool-response.
DEFAULT_ROLE_CONVERSIONS: dict[str, str] = {
    MessageRole.TOOL_CALL.value: MessageRole.ASSISTANT.value,
    MessageRole.TOOL_RESPONSE.value: MessageRole.USER.value,
}
_WIRE_ROLES = {"system", "user", "assistant", "tool", "developer"}
_KNOWN_ROLES = _WIRE_ROLES | set(MessageRole.roles())
_ROLE_VALUES = frozenset(MessageRole.roles())


@dataclass
class TokenUsage:
    """Token counts of one call; ``total_tokens`` is derived so it can never disagree.

    ``input_tokens`` counts every prompt token (OpenAI's convention); ``cached_input_tokens`` is the part
    of them the provider read from its prompt cache (OpenAI ``prompt_tokens_details.cached_tokens``,
    Anthropic ``cache_read_input_tokens``), billed at the cached-input rate (:mod:`modelfactory.pricing`);
    ``cache_write_input_tokens`` the part written to it (Anthropic ``cache_creation_input_tokens``), billed
    at the write rate. ``reasoning_tokens`` is the part of ``output_tokens`` spent reasoning (OpenAI
    ``completion_tokens_details.reasoning_tokens``): a breakdown, billed with the output.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = field(init=False)
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_input_tokens: int = 0

    def __post_init__(self) -> None:
        self.total_tokens = self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, int]:
        out = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }
        for key in _USAGE_EXTRAS:  # only when the provider reported some: rows stay as they were
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenUsage:
        return cls(
            int(data.get("input_tokens") or 0),
            int(data.get("output_tokens") or 0),
            **{key: int(data.get(key) or 0) for key in _USAGE_EXTRAS},
        )

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            **{key: getattr(self, key) + getattr(other, key) for key in _USAGE_EXTRAS},
        )


_USAGE_EXTRAS = ("cached_input_tokens", "reasoning_tokens", "cache_write_input_tokens")


@dataclass
class ToolCallFunction:
    name: str
    arguments: Any  # dict once parsed; the raw string when the provider sent invalid JSON
    description: str | None = None


@dataclass
class ToolCall:
    id: str
    function: ToolCallFunction
    type: str = "function"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "function": {"name": self.function.name, "arguments": self.function.arguments},
        }


@dataclass
class TokenLogprob:
    """One generated token's log-probability and its top alternatives (``logprobs=True, top_logprobs=k``):
    what a multiple-choice scorer reads. Shared by the API and local backends."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "logprob": self.logprob, "top": [list(t) for t in self.top]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenLogprob:
        return cls(
            str(data["token"]), float(data["logprob"]), [(str(t), float(p)) for t, p in data.get("top") or []]
        )


@dataclass
class ChatMessage:
    """What every adapter returns: ``.content`` plus tool calls, usage and the provider's raw reply."""

    role: str = MessageRole.ASSISTANT.value
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    raw: Any = field(default=None, repr=False)  # a whole provider response: too long for a repr
    token_usage: TokenUsage | None = None
    # the model's reasoning text where the provider returns it (kept apart from `content`; never sent back)
    reasoning_content: str | None = None
    logprobs: list[TokenLogprob] | None = None  # per generated token, when the call asked for them

    def __str__(self) -> str:
        """The reply itself, so ``print(model(messages))`` shows what the model said (as smolagents' docs
        show); a reply that is only tool calls reads as a summary of them."""
        if self.content or not self.tool_calls:
            return self.content or ""
        calls = []
        for call in self.tool_calls:  # ours, or a provider's objects passed through by a CallableModel
            function = getattr(call, "function", None)
            args = getattr(function, "arguments", "")
            shown = json.dumps(args, ensure_ascii=False) if isinstance(args, (dict, list)) else str(args)
            calls.append(f"{getattr(function, 'name', '?')}({shown})")
        return "tool calls: " + "; ".join(calls)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form without ``raw`` (which may hold provider objects)."""
        return {
            "role": str(self.role.value if isinstance(self.role, Enum) else self.role),
            "content": self.content,
            "tool_calls": [t.to_dict() for t in self.tool_calls] if self.tool_calls else None,
            "token_usage": self.token_usage.to_dict() if self.token_usage else None,
            **({"reasoning_content": self.reasoning_content} if self.reasoning_content is not None else {}),
            **({"logprobs": [t.to_dict() for t in self.logprobs]} if self.logprobs is not None else {}),
        }

    # smolagents calls ``.dict()`` on model outputs when it serialises agent memory.
    dict = to_dict

    def model_dump_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatMessage:
        tool_calls = None
        if data.get("tool_calls"):
            tool_calls = [
                ToolCall(
                    id=str(tc.get("id", "")),
                    type=tc.get("type", "function"),
                    function=ToolCallFunction(
                        name=tc["function"]["name"], arguments=tc["function"].get("arguments")
                    ),
                )
                for tc in data["tool_calls"]
            ]
        usage = data.get("token_usage")
        role = data.get("role", MessageRole.ASSISTANT)
        if isinstance(role, str) and role in _ROLE_VALUES:
            role = MessageRole(role)  # smolagents' from_dict gives a MessageRole (`.role.value` works)
        return cls(
            role=role,
            content=data.get("content"),
            tool_calls=tool_calls,
            token_usage=TokenUsage.from_dict(usage) if usage else None,
            reasoning_content=data.get("reasoning_content"),
            logprobs=[TokenLogprob.from_dict(t) for t in data["logprobs"]] if data.get("logprobs") else None,
        )


@dataclass
class ToolCallFunctionDelta:
    """The function part of one streamed tool-call piece: the name on the call's first piece, then
    fragments of the arguments' JSON text (``None`` where the piece has none)."""

    name: str | None = None
    arguments: str | None = None


@dataclass
class ToolCallStreamDelta:
    """One piece of one streamed tool call, shaped as smolagents' ``ChatMessageToolCallStreamDelta``.

    Providers send a call in pieces: ``id``, ``type`` and ``function.name`` on its first piece, then
    ``function.arguments`` fragments (a JSON text to concatenate). ``index`` says which call a piece
    belongs to, so parallel calls are put together by it (:func:`agglomerate_stream_deltas`, smolagents'
    function of the same name). Absent parts are ``None``, as in the provider's chunk.
    """

    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: ToolCallFunctionDelta | ToolCallFunction | None = None


@dataclass
class ChatMessageStreamDelta:
    """One piece of a streamed reply: a content piece (always a string, ``""`` when the piece is only
    tool calls or usage, so ``text += delta.content`` works), tool-call pieces
    (:class:`ToolCallStreamDelta`), and on the last delta the usage counts. ``reasoning_content``: a piece
    of the model's reasoning text where the provider streams it (OpenAI's Responses API reasoning
    summary), kept apart from ``content``; not a field of smolagents' class, which ignores it."""

    content: str | None = ""
    tool_calls: list[ToolCallStreamDelta] | None = None
    token_usage: TokenUsage | None = None
    reasoning_content: str | None = None


def agglomerate_stream_deltas(
    deltas: Iterable[ChatMessageStreamDelta], role: str = MessageRole.ASSISTANT
) -> ChatMessage:
    """The reply a stream adds up to: its content joined, its tool-call pieces merged by ``index``
    (arguments concatenated: the JSON text, as smolagents' function of this name leaves it), its usage
    summed."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    usage: TokenUsage | None = None
    for delta in deltas:
        if delta.content:
            content.append(delta.content)
        if delta.reasoning_content:
            reasoning.append(delta.reasoning_content)
        if delta.token_usage is not None:
            usage = delta.token_usage if usage is None else usage + delta.token_usage
        for piece in delta.tool_calls or ():
            if piece.index is None:
                raise MessageError(f"a streamed tool-call piece has no index: {piece!r}")
            call = calls.setdefault(piece.index, {"id": "", "type": "function", "name": "", "arguments": ""})
            if piece.id:
                call["id"] = piece.id
            if piece.type:
                call["type"] = piece.type
            if piece.function is not None:
                if piece.function.name:
                    call["name"] = piece.function.name
                if piece.function.arguments:
                    call["arguments"] += str(piece.function.arguments)
    tool_calls = [
        ToolCall(
            id=c["id"],
            type=c["type"],
            function=ToolCallFunction(name=c["name"], arguments=c["arguments"]),
        )
        for _, c in sorted(calls.items())
    ]
    return ChatMessage(
        role=role,
        content="".join(content),
        tool_calls=tool_calls or None,
        token_usage=usage,
        reasoning_content="".join(reasoning) or None,
    )


# smolagents' names of the same classes: `from smolagents.models import X` -> `from modelfactory import X`.
ChatMessageToolCall = ToolCall
ChatMessageToolCallFunction = ToolCallFunction
ChatMessageToolCallStreamDelta = ToolCallStreamDelta


@dataclass
class GenerationRequest:
    """What a backend receives: already normalised and merged, ready for the wire.

    Defined here, below ``model`` and ``cache``, so the response cache can key a request without importing
    the model layer; ``modelfactory.model.GenerationRequest`` is the same class."""

    messages: list[dict[str, Any]]
    stop_sequences: list[str] = field(default_factory=list)  # every stop; trimmed afterwards anyway
    send_stop: bool = True  # False: the provider must not receive `stop` (supports_stop=False)
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, ... merged
    grammar: Any = None
    response_format: Any = None
    tools: list[dict[str, Any]] | None = None
    # sent with ``tools`` only: "required" unless the call (or generation_kwargs) says otherwise; None:
    # not sent (the provider's default, "auto")
    tool_choice: Any = None

    @property
    def provider_stop(self) -> list[str] | None:
        return self.stop_sequences if (self.send_stop and self.stop_sequences) else None


# --------------------------------------------------------------------------- normalisation


def _get(msg: Any, key: str) -> Any:
    if isinstance(msg, Mapping):
        return msg.get(key)
    return getattr(msg, key, None)


def _is_pil_image(value: Any) -> bool:
    """A PIL image (judged without importing PIL): what agents store screenshots as."""
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save")


def pil_to_data_url(image: Any) -> str:
    """A PIL image as a base64 PNG data URL, as smolagents encodes agents' screenshots for APIs."""
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _normalize_part(part: Any, where: str, flatten: bool) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if not isinstance(part, Mapping):
        raise MessageError(f"{where}: a content part must be a dict, got {type(part).__name__}")
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise MessageError(f"{where}: a text part needs a string 'text', got {type(text).__name__}")
        return {"type": "text", "text": text}
    if kind in ("image", "image_url"):
        if flatten:
            raise MessageError(f"{where}: image parts cannot be sent when flatten_messages_as_text is true")
        if kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, Mapping) else url
        else:
            url = part.get("image")
        if _is_pil_image(url):
            url = pil_to_data_url(url)
        if not isinstance(url, str) or not url:
            raise MessageError(f"{where}: an image part needs a URL, a base64 string or a PIL image")
        if not url.startswith(("http://", "https://", "data:")):
            url = f"data:image/png;base64,{url}"
        return {"type": "image_url", "image_url": {"url": url}}
    raise MessageError(f"{where}: unknown content part type {kind!r} (expected 'text' or 'image')")


def normalize_messages(
    messages: Any,
    *,
    role_conversions: Mapping[str, str] | None = None,
    flatten_messages_as_text: bool = False,
) -> list[dict[str, Any]]:
    """Turn user-supplied messages into OpenAI-shaped dicts, or raise :class:`MessageError`.

    ``role_conversions`` is merged over :data:`DEFAULT_ROLE_CONVERSIONS` (never substituted for it).
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
        raise MessageError(
            f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}"
        )
    messages = list(messages)
    if not messages:
        raise MessageError("messages is empty: pass at least one {'role': 'user', 'content': ...}")
    conversions = {**DEFAULT_ROLE_CONVERSIONS, **(role_conversions or {})}
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        role = _get(msg, "role")
        if role is None:
            raise MessageError(f"{where}: missing 'role' (one of {sorted(_KNOWN_ROLES)})")
        role = role.value if isinstance(role, Enum) else role
        if not isinstance(role, str) or role not in _KNOWN_ROLES | set(conversions):
            raise MessageError(f"{where}: unknown role {role!r} (expected one of {sorted(_KNOWN_ROLES)})")
        role = conversions.get(role, role)
        content = _get(msg, "content")
        norm: dict[str, Any] = {"role": role}
        if content is None:
            if not _get(msg, "tool_calls"):
                raise MessageError(f"{where}: missing 'content'")
            norm["content"] = None
        elif isinstance(content, str):
            norm["content"] = content
        elif isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
            parts = [
                _normalize_part(p, f"{where}.content[{j}]", flatten_messages_as_text)
                for j, p in enumerate(content)
            ]
            if flatten_messages_as_text:
                norm["content"] = "\n".join(p["text"] for p in parts)
            elif all(p["type"] == "text" for p in parts):
                # Most servers accept text parts, but a plain string is accepted by all of them.
                norm["content"] = "\n".join(p["text"] for p in parts)
            else:
                norm["content"] = parts
        else:
            raise MessageError(
                f"{where}: 'content' must be a string or a list of parts, got {type(content).__name__}"
            )
        for extra in ("tool_calls", "tool_call_id", "name"):
            value = _get(msg, extra)
            if value is not None and isinstance(msg, Mapping):
                norm[extra] = value
        out.append(norm)
    return out


# --------------------------------------------------------------------------- stop sequences


def normalize_stop_sequences(stop_sequences: Any, limit: int | None = None) -> list[str]:
    """Validate ``stop_sequences``: ``None``, one string (one stop, never split into characters), or a
    list of non-empty strings; duplicates dropped in linear time. ``limit``: more distinct stops than
    this is a :class:`MessageError` (``modelfactory serve`` caps them as providers do)."""
    if stop_sequences is None:
        return []
    if isinstance(stop_sequences, str):
        stop_sequences = [stop_sequences]
    if not isinstance(stop_sequences, (list, tuple)):
        raise MessageError(f"stop_sequences must be a list of strings, got {type(stop_sequences).__name__}")
    seen: dict[str, None] = {}  # insertion-ordered set: O(1) membership, the first occurrence kept
    for i, s in enumerate(stop_sequences):
        if not isinstance(s, str):
            raise MessageError(f"stop_sequences[{i}] must be a string, got {type(s).__name__}")
        if s == "":
            raise MessageError(f"stop_sequences[{i}] is empty: an empty stop sequence would stop at once")
        seen[s] = None
        if limit is not None and len(seen) > limit:
            raise MessageError(f"stop_sequences: more than {limit} stop sequences (at most {limit} allowed)")
    return list(seen)


def trim_at_stop(text: str, stop_sequences: Sequence[str]) -> str:
    """Cut ``text`` before the earliest occurrence of any stop sequence."""
    cut = len(text)
    for s in stop_sequences:
        i = text.find(s)
        if i != -1 and i < cut:
            cut = i
    return text[:cut]


def settled_prefix(text: str, stop_sequences: Sequence[str]) -> tuple[int, bool]:
    """How much of ``text`` is settled under the stop contract, whatever text follows it.

    Returns ``(n, final)``. ``final``: the reply is ``text[:n]`` however generation goes on (a stop
    occurs at ``n`` and no other stop can still begin before it). Otherwise ``text[:n]`` is a prefix of
    the reply: text from ``n`` on may yet turn out to start a stop. Stopping only when final makes the
    reply equal ``trim_at_stop(unstopped_text)`` even for overlapping stops (``["t", " town "]`` on
    "... town sat": cut before " town ", though "t" completes first).

    The one implementation of the contract on growing text: :class:`StopFilter` runs it on the text a
    stream has not emitted yet, local backends on a row's whole decoded reply after every token (so it
    is kept cheap: only positions holding a stop's first character are tried).
    """
    cut = len(trim_at_stop(text, stop_sequences))
    pending = cut  # the earliest position where an incomplete stop starts (text[q:] a proper prefix)
    for s in stop_sequences:
        head = s[0]
        q = text.find(head, max(0, len(text) - len(s) + 1), pending)
        while q != -1:
            if s.startswith(text[q:]):
                pending = q
                break
            q = text.find(head, q + 1, pending)
    if cut < len(text) and pending == cut:
        return cut, True
    return pending, False


class StopFilter:
    """Applies the stop contract to a stream of text pieces.

    It holds back the longest tail that could still start a stop sequence, so a stop split across
    pieces (or tokens) is never emitted, and nothing after the first stop is emitted either
    (:func:`settled_prefix` decides what is settled).
    """

    def __init__(self, stop_sequences: Sequence[str]) -> None:
        self.stops = list(stop_sequences)
        self._buf = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped or not piece:
            return ""
        if not self.stops:
            return piece
        self._buf += piece
        n, final = settled_prefix(self._buf, self.stops)
        out = self._buf[:n]
        self._buf = "" if final else self._buf[n:]
        self.stopped = final
        return out

    def flush(self) -> str:
        out, self._buf = ("" if self.stopped else trim_at_stop(self._buf, self.stops)), ""
        return out


class StreamShaper:
    """What both stream paths (sync and asyncio) do to each backend delta, written once.

    Stops are filtered (held-back text is released with the usage delta, so usage stays last), empty
    deltas are dropped, and what is yielded is recorded for the response cache.
    """

    def __init__(self, stop_sequences: list[str], record: Any) -> None:
        self.stop = StopFilter(stop_sequences)
        self.record = record

    def shape(self, delta: ChatMessageStreamDelta) -> ChatMessageStreamDelta | None:
        text = self.stop.feed(delta.content) if delta.content else ""
        if delta.token_usage is not None:
            text += self.stop.flush()
        delta.content = text  # a string, "" when empty: `text += delta.content` works on every delta
        if not (
            delta.content or delta.token_usage is not None or delta.tool_calls or delta.reasoning_content
        ):
            return None
        if self.record is not None:
            self.record.add(delta)
        return delta

    def finish(self) -> ChatMessageStreamDelta | None:
        rest = self.stop.flush()
        tail = ChatMessageStreamDelta(content=rest) if rest else None
        if self.record is not None:
            if tail is not None:
                self.record.add(tail)
            self.record.finish()  # only a stream that ended normally is stored
        return tail
