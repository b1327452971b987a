"""The one exception hierarchy of modelfactory.

Everything the library raises on purpose derives from :class:`ModelFactoryError`, so callers can catch
one class and SDK internals never leak through as bare ``KeyError``/``AttributeError``::

    ModelFactoryError
    ├── ConfigError            a config/kwarg is wrong; lists *every* problem (key, problem, fix)
    ├── MessageError           the messages / stop sequences handed to a call are malformed
    │   └── ContextLengthError a prompt (with the reply asked for) longer than a local model's context
    ├── UnsupportedFeatureError  e.g. ``grammar`` asked of a backend that cannot honour it
    ├── MissingDependencyError an optional SDK is not installed; names the pip extra
    ├── CacheMissError         ``cache.mode: replay`` and the request is not in the cache file
    ├── DataError              a file modelfactory wrote and reads back is unreadable; names it and the fix
    └── BackendError           the provider / local model failed; names model, status, provider message
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BackendError",
    "CacheMissError",
    "ConfigError",
    "ContextLengthError",
    "DataError",
    "MessageError",
    "MissingDependencyError",
    "ModelFactoryError",
    "Problem",
    "UnsupportedFeatureError",
    "did_you_mean",
]


class ModelFactoryError(Exception):
    """Base class: catch this to handle anything modelfactory raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: which key, what is wrong, and how to fix it."""

    key: str
    problem: str
    fix: str = ""
    source: str = ""  # e.g. the config file or the model class, when known

    def __str__(self) -> str:
        where = f"[{self.source}] " if self.source else ""
        text = f"{where}{self.key}: {self.problem}"
        return f"{text} (fix: {self.fix})" if self.fix else text


class ConfigError(ModelFactoryError, ValueError):
    """A configuration is invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem] | str, *, title: str = "invalid model config") -> None:
        if isinstance(problems, str):
            problems = [Problem(key="config", problem=problems)]
        self.problems: list[Problem] = list(problems)
        self.title = title
        lines = [f"{title}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class DataError(ModelFactoryError, ValueError):
    """A file modelfactory wrote and reads back (``batches.json``, a response-cache row) is unreadable
    (corrupt, truncated, edited): the message names the file, what is wrong and how to fix it."""


class MessageError(ModelFactoryError, ValueError):
    """The messages, stop sequences or call arguments given to a model are malformed."""


class ContextLengthError(MessageError):
    """A prompt that does not fit the model's context window, with the reply it asks for.

    ``prompt_tokens`` is the exact count, or None when the prompt was refused from its length in characters
    alone (``prompt_chars``), before tokenizing it: then it has at least ``min_tokens`` tokens.
    ``max_tokens`` is the reply budget the caller asked for (None: the model's default, which is shortened
    to fit instead of refused). Refused before any generation, so never retried.
    """

    def __init__(
        self,
        *,
        context: int,
        prompt_tokens: int | None = None,
        max_tokens: int | None = None,
        prompt_chars: int | None = None,
        min_tokens: int | None = None,
        backend: str = "model",
        context_key: str = "",
    ) -> None:
        self.context = context
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.prompt_chars = prompt_chars
        self.min_tokens = min_tokens
        self.backend = backend
        self.context_key = context_key
        if prompt_tokens is None:
            size = f"the prompt has {prompt_chars:,} characters, so at least {min_tokens:,} tokens (not tokenized)"
        else:
            size = f"the prompt has {prompt_tokens:,} tokens"
        ask = f" and max_tokens asks for {max_tokens:,} more" if max_tokens else ""
        bigger = f" (or raise {context_key})" if context_key else ""
        super().__init__(
            f"{backend}: {size}{ask}, but the context window is {context:,} tokens. Fix: shorten or truncate "
            "the conversation"
            + (", or lower max_tokens" if max_tokens else "")
            + f", or use a model with a bigger context{bigger}"
        )

    def __reduce__(self) -> Any:  # picklable with its fields (process pools, multirun launchers)
        fields = {
            "context": self.context,
            "prompt_tokens": self.prompt_tokens,
            "max_tokens": self.max_tokens,
            "prompt_chars": self.prompt_chars,
            "min_tokens": self.min_tokens,
            "backend": self.backend,
            "context_key": self.context_key,
        }
        return (_rebuild_kw, (type(self), fields))


class UnsupportedFeatureError(ModelFactoryError, ValueError):
    """A call asked for something (grammar, response_format, tools) this backend cannot honour."""


class MissingDependencyError(ModelFactoryError, ImportError):
    """An optional SDK is missing; the message names the pip extra that installs it."""

    def __init__(self, package: str, extra: str, backend: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{backend} needs the '{package}' package, which is not installed. "
            f"Install it with: pip install 'modelfactory[{extra}]'"
        )


class CacheMissError(ModelFactoryError, LookupError):
    """``cache.mode: replay`` and this request was never recorded: no request is sent, ever."""

    def __init__(self, *, model_id: str, backend: str, path: str, key: str) -> None:
        self.model_id = model_id
        self.backend = backend
        self.path = path
        self.key = key
        super().__init__(
            f"{backend} model '{model_id}': no cached reply for this request in {path} (cache.mode=replay, "
            f"key {key[:16]}...). Replay only answers requests recorded before: run once with "
            "cache.mode=read_write (same model, messages, generation parameters, stop sequences and tools) "
            "to record it, or check that this run's config matches the recorded one."
        )

    def __reduce__(self) -> Any:
        fields = {"model_id": self.model_id, "backend": self.backend, "path": self.path, "key": self.key}
        return (_rebuild_kw, (type(self), fields))


def _rebuild_kw(cls: type[Any], fields: dict[str, Any]) -> Any:
    return cls(**fields)


class BackendError(ModelFactoryError, RuntimeError):
    """A provider or local model failed a call. Secrets are redacted before the message is built.

    ``retryable`` is decided by each backend from the exception class and HTTP status (429, 408, 5xx,
    timeouts, lost connections), never from the message text; ``retry_after`` is the wait in seconds the
    provider asked for (``Retry-After`` / ``retry-after-ms``), if any; ``attempts`` is how many requests
    were made before giving up, and ``final`` is set once a retry policy gave up on the error, so a model
    wrapping another one (a fallback chain, a function calling a model) never retries it again: retries
    do not stack.
    """

    MAX_MESSAGE = 4000  # a provider may echo a whole (1 MB) prompt back: keep errors readable

    def __init__(
        self,
        message: str,
        *,
        model_id: str | None = None,
        backend: str | None = None,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        if len(message) > self.MAX_MESSAGE:
            cut = len(message) - self.MAX_MESSAGE
            message = f"{message[: self.MAX_MESSAGE]}... ({cut} more characters)"
        self.model_id = model_id
        self.backend = backend
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = attempts
        self.final = False
        self.provider_message = message
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [p for p in (self.backend, self.model_id and f"model '{self.model_id}'") if p]
        head = " ".join(parts) or "model"
        status_txt = f" (HTTP {self.status})" if self.status is not None else ""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{head} failed{status_txt}{tries}: {self.provider_message}"

    def set_attempts(self, attempts: int, note: str = "") -> None:
        """Record how many requests were made (and why retrying stopped) in the error and its text."""
        self.attempts = attempts
        self.final = True
        if note and note not in self.provider_message:
            self.provider_message = f"{self.provider_message} ({note})"
        self.args = (self._render(),)

    def __reduce__(self) -> Any:  # picklable with every field (process pools, multirun launchers)
        fields = {
            "model_id": self.model_id,
            "backend": self.backend,
            "status": self.status,
            "retryable": self.retryable,
            "retry_after": self.retry_after,
            "attempts": self.attempts,
        }
        return (_rebuild_backend_error, (type(self), self.provider_message, fields, self.final))


def _rebuild_backend_error(
    cls: type[BackendError], message: str, fields: dict[str, Any], final: bool = False
) -> BackendError:
    err = cls(message, **fields)
    err.final = final
    return err


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest candidate, or ``""``."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else ""
