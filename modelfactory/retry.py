"""The one retry policy of modelfactory: which failures are retried, how long to wait, when to give up.

Every API backend switches its SDK's own retries off and turns each failure into a
:class:`~modelfactory.errors.BackendError` whose ``retryable`` flag comes from the exception *class* and
the HTTP status (429, 408, 5xx, timeouts, lost connections), never from the message text, and whose
``retry_after`` carries the provider's ``Retry-After``. :class:`~modelfactory.model.Model` then runs each
request through :func:`call_with_retry` (or :func:`acall_with_retry` from asyncio):

- a non-retryable error is raised at once (one request);
- a retryable one is retried up to ``retry.max_attempts`` requests in all, waiting
  ``min(max_wait, initial_wait * 2**(n-1))`` before the n-th retry, minus a random share of up to
  ``jitter`` of it (so many clients that failed together do not come back together);
- a ``Retry-After`` from the provider replaces the backoff: the wait is exactly what the provider asked
  for. When that is more than ``retry.max_wait`` the call gives up at once instead of hammering early.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .clock import get_clock
from .errors import BackendError

__all__ = [
    "RetryPolicy",
    "acall_with_retry",
    "call_with_retry",
    "is_connect_error",
    "is_retryable_status",
    "is_timeout_error",
    "is_transport_error",
    "parse_retry_after",
    "sdk_retries_as_policy",
]

T = TypeVar("T")
log = logging.getLogger("modelfactory.retry")


def is_retryable_status(status: int | None) -> bool:
    """408 (request timeout), 429 (rate limited) and every 5xx are worth another try; nothing else is."""
    return status is not None and (status in (408, 429) or 500 <= status <= 599)


# Transport failures are recognised by class *name* along the MRO: httpx, httpcore and their successors
# httpx2/httpcore2 (which openai >= 3 uses) name their classes alike but share no base class.
def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def is_timeout_error(exc: BaseException) -> bool:
    """A connect/read/write/pool timeout of httpx or httpx2, or the socket layer's ``TimeoutError``."""
    return isinstance(exc, TimeoutError) or "TimeoutException" in _class_names(exc)


def is_connect_error(exc: BaseException) -> bool:
    """The connection could not be opened (refused, DNS): nothing reached the server."""
    return isinstance(exc, ConnectionRefusedError) or "ConnectError" in _class_names(exc)


def is_transport_error(exc: BaseException) -> bool:
    """Any network-level failure (connect, reset, reply cut short, timeout) of httpx, httpx2 or sockets."""
    return isinstance(exc, (ConnectionError, TimeoutError)) or "TransportError" in _class_names(exc)


def parse_retry_after(headers: Mapping[str, Any] | Any, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); None if absent.

    ``headers`` is any mapping with ``.get`` (httpx.Headers, dict); names are matched case-insensitively.
    """
    if headers is None or not hasattr(headers, "get"):
        return None
    lower = {str(k).lower(): v for k, v in headers.items()} if hasattr(headers, "items") else {}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except (TypeError, ValueError):
            value = -1.0
        if value >= 0 and value == value:  # not NaN
            return value
    raw = lower.get("retry-after")
    if raw is None:
        return None
    text = str(raw).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


_SAID: set[tuple[str, int]] = set()


def sdk_retries_as_policy(where: str, retries: Any) -> Any:
    """An SDK's own ``max_retries`` (smolagents passes ``client_kwargs={"max_retries": 5}`` to the openai
    client) taken as this policy's retries, ``retry.max_attempts = retries + 1``, so that it never stacks
    with ours: the SDK's retries stay off. Says so once per process for each setting (a log warning).
    Returns ``retries`` (validated where it lands, as the spec's ``max_retries``)."""
    if isinstance(retries, int) and not isinstance(retries, bool) and (where, retries) not in _SAID:
        _SAID.add((where, retries))
        log.warning(
            "%s=%d is applied as retry.max_attempts=%d: modelfactory's retry policy (modelfactory/retry.py) "
            "retries, the SDK's own retries stay off so the two never stack",
            where,
            retries,
            retries + 1,
        )
    return retries


class RetryPolicy(BaseModel):
    """``retry:`` in a model config. Defaults: 3 attempts, 1 s, 2 s waits (with jitter), never over 30 s."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(
        default=3, ge=1, description="requests per call in all, the first included (1: no retry)"
    )
    initial_wait: float = Field(
        default=1.0, ge=0, description="seconds before the first retry; doubles each retry"
    )
    max_wait: float = Field(default=30.0, ge=0, description="the longest single wait, Retry-After included")
    jitter: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="random share taken off each backoff wait: 0 = exact, 1 = anywhere in [0, w]",
    )

    @model_validator(mode="after")
    def _ordered(self) -> RetryPolicy:
        if self.max_wait < self.initial_wait:
            raise ValueError(
                f"max_wait ({self.max_wait}) is below initial_wait ({self.initial_wait}): raise max_wait"
            )
        return self

    def backoff(self, retry: int, draw: float = 0.0) -> float:
        """The wait before retry number ``retry`` (1-based), for a uniform ``draw`` in [0, 1)."""
        nominal = min(self.max_wait, self.initial_wait * 2.0 ** (retry - 1))
        return nominal * (1.0 - self.jitter * draw)

    def next_wait(self, error: BaseException, attempt: int, draw: float = 0.0) -> tuple[float | None, str]:
        """After ``attempt`` requests failed with ``error``: the wait before the next one, or None to stop
        (with a note saying why, for the error message)."""
        if not isinstance(error, BackendError) or not error.retryable or error.final:
            return None, ""  # final: an inner model's policy already gave up on it
        if attempt >= self.max_attempts:
            return None, ""
        if error.retry_after is not None:
            if error.retry_after > self.max_wait:
                return None, (
                    f"the provider asked to retry after {error.retry_after:g}s, more than "
                    f"retry.max_wait={self.max_wait:g}s: not retried"
                )
            return error.retry_after, ""
        return self.backoff(attempt, draw), ""


def _give_up(error: BaseException, attempt: int, note: str) -> None:
    if isinstance(error, BackendError) and not error.final:  # final: an inner policy's count stands
        error.set_attempts(attempt, note)


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    before_attempt: Callable[[], None] | None = None,
    sleep: Callable[[float], None] | None = None,
    draw: Callable[[], float] = random.random,
    on_retry: Callable[[BackendError, int, float], None] | None = None,
) -> T:
    """Call ``fn`` until it returns, raises a non-retryable error, or the policy gives up.

    ``before_attempt`` runs before every request (the rate limiter); ``on_retry(error, attempt, wait)``
    before every wait. Only :class:`BackendError` with ``retryable=True`` is ever retried. ``sleep``
    defaults to the current :func:`~modelfactory.clock.get_clock`'s, looked up at each wait.
    """
    attempt = 1
    while True:
        if before_attempt is not None:
            before_attempt()
        try:
            return fn()
        except BackendError as err:
            wait, note = policy.next_wait(err, attempt, draw())
            if wait is None:
                _give_up(err, attempt, note)
                raise
            _log_retry(err, attempt, policy, wait)
            if on_retry is not None:
                on_retry(err, attempt, wait)
            (sleep or get_clock().sleep)(wait)
            attempt += 1


async def acall_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    before_attempt: Callable[[], Awaitable[None]] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    draw: Callable[[], float] = random.random,
    on_retry: Callable[[BackendError, int, float], None] | None = None,
) -> T:
    """:func:`call_with_retry` for coroutines: waits with the clock's ``asleep``, never blocking the loop."""
    attempt = 1
    while True:
        if before_attempt is not None:
            await before_attempt()
        try:
            return await fn()
        except BackendError as err:
            wait, note = policy.next_wait(err, attempt, draw())
            if wait is None:
                _give_up(err, attempt, note)
                raise
            _log_retry(err, attempt, policy, wait)
            if on_retry is not None:
                on_retry(err, attempt, wait)
            await (sleep or get_clock().asleep)(wait)
            attempt += 1


def _log_retry(err: BackendError, attempt: int, policy: RetryPolicy, wait: float) -> None:
    if log.isEnabledFor(logging.INFO):  # the error text is already scrubbed of secrets
        log.info("attempt %d/%d failed, retrying in %.2fs: %s", attempt, policy.max_attempts, wait, err)
