"""A response cache with strict replay: ``cache: {mode: off | read_write | replay, path: ...}`` on any model.

The key is a sha256 of a canonical JSON of what decides a reply: the backend class, the identity the
model supplies (``Model.cache_identity()``: by default its spec without credentials and without the
fields each spec class lists in ``cache_exclude``, see :func:`model_identity`), and the normalised request (messages, generation params, stop sequences,
tools, response_format, grammar). Keys, tokens and the credential parts of an endpoint URL never enter
it: the same request with another API key is a hit.

- ``read_write``: a hit returns the stored reply (no request, no rate-limit token); a miss calls the
  model and stores the reply (content already trimmed at the stop sequences, tool calls, usage).
- ``replay``: a hit as above; a miss raises :class:`~modelfactory.errors.CacheMissError`, never a
  request, so an experiment re-runs offline and bit-for-bit.
- ``off`` (default): the file is never opened.

The store is one SQLite file in WAL mode with a busy timeout; every thread (and every process: runner
threads, joblib / multiprocessing workers) gets its own connection, and each write is one short
``INSERT OR REPLACE`` transaction, so concurrent writers are safe. WAL needs a local file system (not NFS).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from .errors import DataError
from .messages import (
    ChatMessage,
    ChatMessageStreamDelta,
    ToolCallFunction,
    ToolCallStreamDelta,
    agglomerate_stream_deltas,
)
from .secrets import is_credential_param, names_url_credential

if TYPE_CHECKING:
    import sqlite3

    from .messages import GenerationRequest

__all__ = [
    "DEFAULT_CACHE_PATH",
    "CacheSpec",
    "Identified",
    "ResponseCache",
    "StreamRecorder",
    "get_store",
    "model_identity",
    "replay_deltas",
    "request_key",
]

DEFAULT_CACHE_PATH = ".modelfactory/cache.sqlite"
KEY_VERSION = 2  # bump when the key's recipe changes: old rows then simply miss


class CacheSpec(BaseModel):
    """``cache`` on every model spec. ``path`` is resolved against the working directory when the model
    is built (so a Hydra job that changes directory still uses the same file)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    mode: Literal["off", "read_write", "replay"] = Field(
        default="off",
        description="off | read_write (hit: stored reply; miss: call and store) | replay (miss: error)",
    )
    path: str = Field(
        default=DEFAULT_CACHE_PATH, description="the SQLite file, relative to the working directory"
    )

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value:
            raise ValueError("must be a file path")
        return str(Path(os.path.expanduser(value)).absolute())

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


# --------------------------------------------------------------------------- the key


@runtime_checkable
class Identified(Protocol):
    """What the key needs of a model (every :class:`~modelfactory.model.Model` is one): the fields that
    decide its replies, and its spec for the generation defaults of a model nested in another's spec.
    A protocol, so this module never imports the model layer above it."""

    spec: Any

    def cache_identity(self) -> Mapping[str, Any]: ...


def _clean_url(text: str) -> str:
    """An endpoint without what only identifies a caller: user:password@ and secret query params."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return text
    host = parts.hostname.lower()
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not names_url_credential(k)]
    )
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), query, ""))


def _canon(value: Any, *, spec: bool = False, parent: str = "") -> Any:
    """A JSON-ready, deterministic form of ``value``. ``spec``: drop credentials (config data, request
    params: a credential's name, ``api_key`` but not ``stop_token_ids``, or a header that is not public;
    see :func:`~modelfactory.secrets.is_credential_param`).
    A whole float is written as an int, so ``temperature=0`` and ``0.0`` are one key."""
    if isinstance(value, SecretStr):
        return None
    if isinstance(value, Enum):
        return _canon(value.value, spec=spec)
    if isinstance(value, Identified) and not isinstance(value, type):
        # a built model inside a spec (a FallbackModel member): its defaults decide its replies too
        defaults = _canon(value.spec.generation_defaults())
        return {"backend": type(value).__name__, "model": model_identity(value), "defaults": defaults}
    if isinstance(value, BaseModel):
        return _canon(value.model_dump(), spec=spec)
    if isinstance(value, type) and issubclass(value, BaseModel):  # e.g. a response_format class
        return {"schema": _canon(value.model_json_schema(), spec=spec)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _canon(dataclasses.asdict(value), spec=spec)
    if isinstance(value, Mapping):
        return {
            str(k): _canon(v, spec=spec, parent=str(k))
            for k, v in value.items()
            if not (spec and (is_credential_param(f"{parent}.{k}") or str(k) == "cache"))
        }
    if isinstance(value, (list, tuple)):
        return [_canon(v, spec=spec) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_canon(v, spec=spec) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, str):
        return _clean_url(value) if spec and value[:8].lower().startswith(("http://", "https://")) else value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)  # 0.0 -> 0: a number typed either way is one request
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, bytes):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"  # never an id() or address


def model_identity(model: Identified) -> dict[str, Any]:
    """The identity ``model`` supplies, canonical: secret-named keys dropped at every depth, endpoint URLs
    without their credentials (``user:password@``, secret query parameters)."""
    canon = _canon(dict(model.cache_identity()), spec=True)
    assert isinstance(canon, dict)
    return canon


def request_key(model: Identified, req: GenerationRequest) -> str:
    """The cache key of one request to ``model`` (hex sha256)."""
    payload = {
        "v": KEY_VERSION,
        "backend": type(model).__name__,
        "model": model_identity(model),
        "messages": _canon(req.messages),
        "params": _canon(req.params, spec=True),  # an api_key in generation_kwargs is not the request
        "stop_sequences": list(req.stop_sequences),
        "send_stop": bool(req.send_stop),
        "grammar": _canon(req.grammar),
        "response_format": _canon(req.response_format),
        "tools": _canon(req.tools),
    }
    if req.tool_choice is not None:  # only with tools; keys of requests without tools are unchanged
        payload["tool_choice"] = _canon(req.tool_choice)
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- the store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    reply TEXT NOT NULL,
    created REAL NOT NULL
)
"""
_BUSY_MS = 60_000


class ResponseCache:
    """One SQLite file; a connection per thread and per process (never shared across a fork)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:  # picklable: connections stay behind
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn  # type: ignore[no-any-return]
        import sqlite3  # here, not at import time: a model with the cache off never needs it

        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + _BUSY_MS / 1000
        while True:
            conn = sqlite3.connect(str(self.path), timeout=_BUSY_MS / 1000, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
                # Switching to WAL takes an exclusive lock that the busy handler does not always wait
                # for when several processes create the file at once: retry that step ourselves.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_SCHEMA)
                break
            except sqlite3.OperationalError as exc:
                conn.close()
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored reply, or None; a :class:`DataError` naming the file, the row and the fix when the
        row is not a reply this cache wrote (never an empty reply taken for an answer)."""
        row = self._connect().execute("SELECT reply FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            data = json.loads(row[0])
            # as ChatMessage.to_dict writes it: a role, and a content key (text, or null beside tool calls)
            usable = isinstance(data, dict) and isinstance(data.get("role"), str) and "content" in data
            usable = usable and isinstance(data["content"], (str, type(None)))
            usable = usable and isinstance(data.get("tool_calls"), (list, type(None)))
        except (TypeError, ValueError):
            usable = False
        if not usable:
            raise DataError(
                f"response cache {self.path}: the stored reply for key {key[:16]}... is unreadable "
                f'({str(row[0])[:80]!r}). Fix: delete that row (sqlite3 {self.path} "DELETE FROM '
                f"responses WHERE key='{key}'\") or the cache file, or run with cache.mode=off"
            )
        return dict(data)

    def put(self, key: str, model: str, reply: Mapping[str, Any]) -> None:
        text = json.dumps(dict(reply), ensure_ascii=False, sort_keys=True)
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT OR REPLACE INTO responses (key, model, reply, created) VALUES (?, ?, ?, ?)",
                (key, model, text, time.time()),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def __len__(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close this thread's connection (others close when their thread or process ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local.conn = None


_STORES: dict[str, ResponseCache] = {}
_STORES_LOCK = threading.Lock()


def get_store(path: str | os.PathLike[str]) -> ResponseCache:
    """The process-wide store of ``path`` (models sharing a file share its per-thread connections)."""
    key = str(Path(path).absolute())
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = ResponseCache(key)
        return store


class StreamRecorder:
    """Collects a stream's (already stop-filtered) deltas; :meth:`finish` hands the whole reply to
    ``store`` once the stream ended normally: the content, the tool calls put together from their
    pieces (arguments parsed as :meth:`Model.generate` returns them), the usage."""

    def __init__(self, store: Callable[[ChatMessage], None]) -> None:
        self._store = store
        self._deltas: list[ChatMessageStreamDelta] = []

    def add(self, delta: ChatMessageStreamDelta) -> None:
        self._deltas.append(delta)

    def finish(self) -> None:
        reply = agglomerate_stream_deltas(self._deltas)
        usages = [d.token_usage for d in self._deltas if d.token_usage is not None]
        reply.token_usage = usages[-1] if usages else None  # the last delta's: the stream's whole usage
        for call in reply.tool_calls or ():
            with contextlib.suppress(ValueError):  # not JSON: kept as sent, as generate() keeps it
                call.function.arguments = json.loads(call.function.arguments)
        self._store(reply)


def replay_deltas(reply: ChatMessage) -> Iterator[ChatMessageStreamDelta]:
    """A cached reply as a stream: its reasoning text in one delta of its own (as a provider streams it,
    before the answer and apart from it), its content and tool calls in one delta (each call one piece,
    shaped as a provider's first piece: index, id, name and the arguments as JSON text), then the usage."""
    if reply.reasoning_content:
        yield ChatMessageStreamDelta(content="", reasoning_content=reply.reasoning_content)
    if reply.content or reply.tool_calls:
        pieces = [
            ToolCallStreamDelta(
                index=i,
                id=call.id,
                type=call.type,
                function=ToolCallFunction(
                    name=call.function.name,
                    arguments=call.function.arguments
                    if isinstance(call.function.arguments, str)
                    else json.dumps(call.function.arguments),
                ),
            )
            for i, call in enumerate(reply.tool_calls or ())
        ]
        yield ChatMessageStreamDelta(content=reply.content or "", tool_calls=pieces or None)
    if reply.token_usage is not None:
        yield ChatMessageStreamDelta(token_usage=reply.token_usage)
