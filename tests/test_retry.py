"""The retry policy and the rate limiter, on their own and as the Model base class applies them."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from modelfactory import build_model
from modelfactory.backends.callable import CallableModel
from modelfactory.backends.litellm import LiteLLMModel
from modelfactory.backends.openai import OpenAIServerModel
from modelfactory.clock import SystemClock, get_clock, use_clock
from modelfactory.errors import BackendError, ConfigError, MessageError
from modelfactory.messages import ChatMessage, ChatMessageStreamDelta, TokenUsage
from modelfactory.model import GenerationRequest, Model
from modelfactory.ratelimit import RateLimiter
from modelfactory.retry import (
    RetryPolicy,
    acall_with_retry,
    call_with_retry,
    is_connect_error,
    is_retryable_status,
    is_timeout_error,
    is_transport_error,
    parse_retry_after,
)
from modelfactory.settings import ModelSpec
from tests.timing import VirtualClock

MSGS = [{"role": "user", "content": "hi"}]
NO_JITTER = RetryPolicy(max_attempts=4, initial_wait=1.0, max_wait=30.0, jitter=0.0)


def retryable(**kw: Any) -> BackendError:
    return BackendError("busy", status=503, retryable=True, **kw)


class Script:
    """A callable that raises the queued exceptions in turn, then returns 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("status", "expected"),
    [(408, True), (429, True), (500, True), (502, True), (503, True), (504, True), (599, True)]
    + [(400, False), (401, False), (403, False), (404, False), (409, False), (422, False), (200, False)]
    + [(None, False)],
)
def test_retryable_statuses(status: int | None, expected: bool) -> None:
    assert is_retryable_status(status) is expected


def test_parse_retry_after_seconds_ms_dates_and_junk() -> None:
    assert parse_retry_after({"Retry-After": "1"}) == 1.0
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after(httpx.Headers({"Retry-After": "3"})) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25  # ms wins
    assert parse_retry_after({"retry-after": "-4"}) == 0.0
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now) == pytest.approx(30.0, abs=1.0)
    assert parse_retry_after({"Retry-After": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    for junk in ("soon", "", "nan", "inf"):
        assert parse_retry_after({"Retry-After": junk}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after(None) is None


def test_backend_error_survives_pickling_with_its_fields() -> None:
    import pickle

    err = BackendError("busy", model_id="m", backend="B", status=429, retryable=True, retry_after=2.0)
    err.set_attempts(3)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.status, copy.retryable, copy.retry_after, copy.attempts, copy.final) == (
        429,
        True,
        2.0,
        3,
        True,
    )
    assert str(copy) == str(err) == "B model 'm' failed (HTTP 429) after 3 attempts: busy"


# --------------------------------------------------------------------------- the policy spec


def test_policy_defaults_and_config_keys() -> None:
    spec = ModelSpec.from_kwargs({"model_id": "m"})
    assert spec.retry == RetryPolicy(max_attempts=3, initial_wait=1.0, max_wait=30.0, jitter=0.5)
    assert spec.requests_per_minute is None
    cfg = OmegaConf.create({"model_id": "m", "retry": {"max_attempts": 5, "initial_wait": 0.5}})
    spec = ModelSpec.from_kwargs(cfg)
    assert (spec.retry.max_attempts, spec.retry.initial_wait, spec.retry.max_wait) == (5, 0.5, 30.0)
    assert ModelSpec.from_kwargs({"model_id": "m", "retry": None}).retry == RetryPolicy()


def test_policy_problems_name_the_nested_key() -> None:
    with pytest.raises(ConfigError) as info:
        ModelSpec.from_kwargs(
            {
                "model_id": "m",
                "retry": {"max_attempts": 0, "max_atempts": 2, "jitter": 2},
                "requests_per_minute": 0,
            }
        )
    problems = {p.key: p for p in info.value.problems}
    assert set(problems) == {"retry.max_attempts", "retry.max_atempts", "retry.jitter", "requests_per_minute"}
    assert problems["retry.max_atempts"].problem == "unknown key, did you mean 'max_attempts'?"
    assert "retry accepts: initial_wait, jitter, max_attempts, max_wait" in problems["retry.max_atempts"].fix
    with pytest.raises(ConfigError, match="max_wait"):
        ModelSpec.from_kwargs({"model_id": "m", "retry": {"initial_wait": 10, "max_wait": 1}})
    with pytest.raises(ConfigError) as info:
        ModelSpec.from_kwargs({"model_id": "m", "retry": "fast"})
    assert info.value.problems[0].key == "retry"


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(initial_wait=1.0, max_wait=5.0, jitter=0.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


@given(retry=st.integers(1, 20), draw=st.floats(0, 1, exclude_max=True), jitter=st.floats(0, 1))
def test_jitter_stays_within_bounds(retry: int, draw: float, jitter: float) -> None:
    policy = RetryPolicy(initial_wait=0.5, max_wait=8.0, jitter=jitter)
    nominal = min(8.0, 0.5 * 2 ** (retry - 1))
    wait = policy.backoff(retry, draw)
    assert nominal * (1 - jitter) - 1e-9 <= wait <= nominal + 1e-9


def test_jitter_spreads_waits() -> None:
    policy = RetryPolicy(initial_wait=1.0, jitter=0.5)
    waits = []
    for _ in range(50):
        sleeps: list[float] = []
        call_with_retry(Script(retryable()), policy, sleep=sleeps.append)
        waits += sleeps
    assert all(0.5 <= w <= 1.0 for w in waits)
    assert len({round(w, 6) for w in waits}) > 10  # not all clients come back together


# --------------------------------------------------------------------------- the loop (sync and async)


def test_retryable_errors_are_retried_with_backoff() -> None:
    fn, sleeps = Script(retryable(), retryable()), []
    assert call_with_retry(fn, NO_JITTER, sleep=sleeps.append) == "ok"
    assert fn.calls == 3
    assert sleeps == [1.0, 2.0]


def test_non_retryable_errors_fail_at_once() -> None:
    err = BackendError("bad key", status=401)
    fn, sleeps = Script(err), []
    with pytest.raises(BackendError) as info:
        call_with_retry(fn, NO_JITTER, sleep=sleeps.append)
    assert info.value is err
    assert (fn.calls, sleeps, err.attempts) == (1, [], 1)


def test_other_exceptions_are_never_retried() -> None:
    fn = Script(KeyError("x"))
    with pytest.raises(KeyError):
        call_with_retry(fn, NO_JITTER, sleep=lambda s: None)
    assert fn.calls == 1


def test_giving_up_reports_the_attempts() -> None:
    fn, sleeps = Script(*[retryable() for _ in range(10)]), []
    with pytest.raises(BackendError) as info:
        call_with_retry(fn, NO_JITTER, sleep=sleeps.append)
    assert fn.calls == 4 == info.value.attempts
    assert sleeps == [1.0, 2.0, 4.0]
    assert "failed (HTTP 503) after 4 attempts: busy" in str(info.value)


def test_retry_after_replaces_the_backoff() -> None:
    fn, sleeps = Script(retryable(retry_after=7.0), retryable(retry_after=0.0)), []
    assert call_with_retry(fn, RetryPolicy(jitter=1.0), sleep=sleeps.append) == "ok"
    assert sleeps == [7.0, 0.0]  # exactly what the provider asked, no jitter


def test_retry_after_beyond_max_wait_gives_up() -> None:
    fn, sleeps = Script(retryable(retry_after=120.0)), []
    with pytest.raises(BackendError, match=r"retry after 120s, more than retry.max_wait=30s"):
        call_with_retry(fn, NO_JITTER, sleep=sleeps.append)
    assert (fn.calls, sleeps) == (1, [])


def test_before_attempt_runs_before_every_request() -> None:
    seen: list[int] = []
    fn = Script(retryable(), retryable())
    call_with_retry(fn, NO_JITTER, sleep=lambda s: None, before_attempt=lambda: seen.append(fn.calls))
    assert seen == [0, 1, 2]


def test_async_loop_matches_the_sync_one() -> None:
    sleeps: list[float] = []

    async def fake_sleep(s: float) -> None:
        sleeps.append(s)

    calls = 0

    async def fn() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise retryable(retry_after=0.5 if calls == 1 else None)
        return "ok"

    assert asyncio.run(acall_with_retry(fn, NO_JITTER, sleep=fake_sleep)) == "ok"
    assert (calls, sleeps) == (3, [0.5, 2.0])


def test_async_loop_waits_on_the_event_loop_never_blocking_it(virtual_clock: VirtualClock) -> None:
    policy = RetryPolicy(max_attempts=3, initial_wait=0.05, max_wait=1, jitter=0)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(3):
            await asyncio.sleep(0)
            ticks += 1

    async def main() -> str:
        script = Script(retryable(), retryable())

        async def fn() -> str:
            return script()

        result, _ = await asyncio.gather(acall_with_retry(fn, policy), ticker())
        return result

    assert asyncio.run(main()) == "ok"
    assert virtual_clock.asleeps == [0.05, 0.1]  # the policy's back-off, awaited ...
    assert virtual_clock.sleeps == []  # ... never a blocking sleep on the loop's thread
    assert ticks == 3


def test_the_default_waits_follow_the_clock_in_use() -> None:
    assert isinstance(get_clock(), SystemClock)
    sync_clock, async_clock = VirtualClock(), VirtualClock()
    with use_clock(sync_clock):
        assert call_with_retry(Script(retryable()), NO_JITTER) == "ok"
    with use_clock(async_clock):
        script = Script(retryable(), retryable())

        async def call() -> str:
            return script()

        assert asyncio.run(acall_with_retry(call, NO_JITTER)) == "ok"
    assert isinstance(get_clock(), SystemClock)  # restored
    assert (sync_clock.sleeps, sync_clock.asleeps) == ([1.0], [])
    assert (async_clock.sleeps, async_clock.asleeps) == ([], [1.0, 2.0])


# --------------------------------------------------------------------------- applied by Model


class Flaky(Model):
    """A backend whose failures are scripted; streams its reply in three pieces."""

    def __init__(self, errors: list[BaseException], stream_break: BaseException | None = None, **kw: Any):
        kw.setdefault("model_id", "flaky")
        super().__init__(**kw)
        self.errors = errors
        self.stream_break = stream_break
        self.calls = 0
        self.sent: list[float] = []

    def _attempt(self) -> None:
        self.calls += 1
        self.sent.append(get_clock().monotonic())
        if self.errors:
            raise self.errors.pop(0)

    def _generate(self, req: GenerationRequest) -> ChatMessage:
        self._attempt()
        return ChatMessage(content="fine", token_usage=TokenUsage(1, 1))

    def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
        self._attempt()
        yield ChatMessageStreamDelta(content="one ")
        if self.stream_break is not None:
            raise self.stream_break
        yield ChatMessageStreamDelta(content="two")
        yield ChatMessageStreamDelta(token_usage=TokenUsage(1, 2))


FAST = {"initial_wait": 0.01, "max_wait": 1.0, "jitter": 0.0}


def test_model_retries_retryable_backend_errors() -> None:
    model = Flaky([retryable(), retryable()], retry=FAST)
    assert model(MSGS).content == "fine"
    assert model.calls == 3


def test_model_retries_builtin_connection_and_timeout_errors_by_class() -> None:
    model = Flaky([ConnectionResetError("reset"), TimeoutError("slow")], retry=FAST)
    assert model(MSGS).content == "fine"
    assert model.calls == 3


def test_model_wraps_and_does_not_retry_other_errors() -> None:
    model = Flaky([RuntimeError("CUDA out of memory"), retryable()], retry=FAST)
    with pytest.raises(BackendError, match="RuntimeError: CUDA out of memory") as info:
        model(MSGS)
    assert (model.calls, info.value.retryable) == (1, False)


def test_model_with_one_attempt_never_retries() -> None:
    model = Flaky([retryable()], retry={"max_attempts": 1})
    with pytest.raises(BackendError):
        model(MSGS)
    assert model.calls == 1


def test_message_errors_are_raised_before_any_attempt() -> None:
    model = Flaky([], retry=FAST)
    with pytest.raises(MessageError):
        model([])
    assert model.calls == 0


def test_stream_start_is_retried() -> None:
    model = Flaky([retryable(), ConnectionError("refused")], retry=FAST)
    deltas = list(model.generate_stream(MSGS))
    assert "".join(d.content or "" for d in deltas) == "one two"
    assert deltas[-1].token_usage == TokenUsage(1, 2)
    assert model.calls == 3


def test_stream_is_never_retried_after_content() -> None:
    model = Flaky([], stream_break=ConnectionResetError("peer reset"), retry=FAST)
    got = []
    with pytest.raises(BackendError, match="not retried") as info:
        for delta in model.generate_stream(MSGS):
            got.append(delta.content)
    assert got == ["one "]
    assert model.calls == 1
    assert info.value.retryable is True  # a transient failure, but content had already gone out


def test_abandoned_stream_closes_the_backend_stream() -> None:
    closed = threading.Event()

    class Closing(Flaky):
        def _generate_stream(self, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
            try:
                yield from super()._generate_stream(req)
            finally:
                closed.set()

    stream = Closing([]).generate_stream(MSGS)
    assert next(stream).content == "one "
    stream.close()
    assert closed.is_set()


def test_nested_models_never_stack_retries() -> None:
    inner = Flaky([retryable() for _ in range(10)], retry={**FAST, "max_attempts": 3})
    outer = CallableModel(fn=lambda messages: inner(messages).content, retry={**FAST, "max_attempts": 3})
    with pytest.raises(BackendError) as info:
        outer(MSGS)
    assert inner.calls == 3  # the inner policy's 3, not 3 x 3
    assert info.value.final and info.value.attempts == 3


def test_callable_model_retries_its_functions_transient_errors() -> None:
    calls = []

    def fn(messages: Any) -> str:
        calls.append(1)
        if len(calls) < 2:
            raise ConnectionError("the user's own HTTP call failed")
        return "done"

    assert CallableModel(fn=fn, retry=FAST)(MSGS).content == "done"
    assert len(calls) == 2


# --------------------------------------------------------------------------- deprecated aliases


def test_max_retries_is_an_alias_of_max_attempts() -> None:
    model = OpenAIServerModel(model_id="m", api_base="http://127.0.0.1:1/v1", max_retries=4)
    assert model.spec.retry.max_attempts == 5
    rebuilt = build_model(model.to_dict())  # the saved config builds the same model
    assert rebuilt.spec.retry == model.spec.retry
    assert OpenAIServerModel(model_id="m", api_base="http://127.0.0.1:1/v1").spec.retry.max_attempts == 3
    assert OpenAIServerModel(model_id="m", api_base="http://x/v1").client.max_retries == 0  # SDK's: off


def test_conflicting_alias_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        OpenAIServerModel(
            model_id="m", api_base="http://127.0.0.1:1/v1", max_retries=1, retry={"max_attempts": 5}
        )
    (problem,) = info.value.problems
    assert problem.key == "max_retries"
    assert "retry.max_attempts" in problem.fix
    with pytest.raises(ConfigError) as info:
        LiteLLMModel(model_id="openai/x", num_retries=0, retry={"max_attempts": 3})
    assert info.value.problems[0].key == "num_retries"
    assert LiteLLMModel(model_id="openai/x", num_retries=2).spec.retry.max_attempts == 3


def test_sdk_retry_knobs_in_client_kwargs_are_refused() -> None:
    """client_kwargs.max_retries is our retry policy (smolagents passes it: tests/backends/test_openai.py);
    the other knobs with their own setting are refused."""
    with pytest.raises(ConfigError) as info:
        OpenAIServerModel(
            model_id="m", api_base="http://x/v1", client_kwargs={"max_retries": 5, "timeout": 3}
        )
    assert {p.key for p in info.value.problems} == {"client_kwargs.timeout"}
    with pytest.raises(ConfigError, match="retry.max_attempts"):
        LiteLLMModel(model_id="openai/x", completion_kwargs={"num_retries": 3})


# --------------------------------------------------------------------------- rate limiter


def test_limiter_spaces_requests_evenly() -> None:
    clock = VirtualClock(frozen=True)
    limiter = RateLimiter(60, clock=clock)  # one a second
    assert [limiter.reserve() for _ in range(4)] == [0.0, 1.0, 2.0, 3.0]
    clock.now += 10  # idle: no credit is saved up beyond the burst
    assert limiter.reserve() == 0.0
    assert limiter.reserve() == 1.0


def test_limiter_burst() -> None:
    clock = VirtualClock(frozen=True)
    limiter = RateLimiter(60, burst=3, clock=clock)
    assert [limiter.reserve() for _ in range(5)] == [0.0, 0.0, 0.0, 1.0, 2.0]


def test_limiter_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
    with pytest.raises(ValueError):
        RateLimiter(10, burst=0)


def slots(n: int, interval: float) -> list[float]:
    return [pytest.approx(k * interval) for k in range(n)]


def test_limiter_hands_each_slot_to_one_thread() -> None:
    clock = VirtualClock(frozen=True)  # every wait is then the slot a caller reserved, whatever the order
    limiter = RateLimiter(1200, clock=clock)  # 50 ms apart
    waits: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(3):
            wait = limiter.acquire()
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == slots(12, 0.05)  # 12 distinct slots: no two threads shared one
    assert sorted(clock.sleeps) == sorted(w for w in waits if w > 0)  # and each thread slept its own


def test_limiter_shared_by_asyncio_tasks_and_a_thread() -> None:
    clock = VirtualClock(frozen=True)
    limiter = RateLimiter(1200, clock=clock)
    task_waits: list[float] = []
    thread_waits: list[float] = []

    async def task() -> None:
        task_waits.append(await limiter.aacquire())

    def worker() -> None:
        for _ in range(4):
            thread_waits.append(limiter.acquire())

    async def tasks() -> None:
        await asyncio.gather(*(task() for _ in range(6)))

    thread = threading.Thread(target=worker)
    thread.start()
    asyncio.run(tasks())
    thread.join()
    assert sorted(task_waits + thread_waits) == slots(10, 0.05)
    assert sorted(clock.asleeps) == sorted(w for w in task_waits if w > 0)  # tasks awaited: loop not blocked
    assert sorted(clock.sleeps) == sorted(w for w in thread_waits if w > 0)  # the thread blocked itself


def test_model_requests_per_minute_counts_every_attempt(virtual_clock: VirtualClock) -> None:
    model = Flaky([retryable()], retry={"initial_wait": 0.0, "max_wait": 1.0}, requests_per_minute=600)
    for _ in range(3):
        model(MSGS)
    assert model.calls == 4  # 3 calls, one retried
    t0 = virtual_clock.start
    assert model.sent == [t0, pytest.approx(t0 + 0.1), pytest.approx(t0 + 0.2), pytest.approx(t0 + 0.3)]
    assert virtual_clock.sleeps == [0.0, pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.1)]


def test_one_limiter_per_model_shared_by_threads() -> None:
    model = Flaky([], requests_per_minute=1200)
    with use_clock(VirtualClock(frozen=True)) as clock:
        threads = [threading.Thread(target=lambda: model(MSGS)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert model.calls == 6
    assert sorted(clock.sleeps) == slots(6, 0.05)[1:]  # one limiter: slots 1..5 waited for, in some order


# --------------------------------------------------------------------------- transport failures


def _transport_modules() -> list[Any]:
    """httpx and, where installed, httpx2 (openai >= 3 raises the latter's classes)."""
    mods = [httpx]
    with contextlib.suppress(ImportError):
        import httpx2

        mods.append(httpx2)
    return mods


@pytest.mark.parametrize("mod", _transport_modules(), ids=lambda m: m.__name__)
def test_transport_failures_are_classified_alike_for_httpx_and_httpx2(mod: Any) -> None:
    refused, timeout = mod.ConnectError("refused"), mod.ReadTimeout("slow")
    reset = mod.RemoteProtocolError("peer closed connection")
    assert is_connect_error(refused) and not is_timeout_error(refused) and is_transport_error(refused)
    assert is_timeout_error(timeout) and not is_connect_error(timeout) and is_transport_error(timeout)
    assert is_timeout_error(mod.ConnectTimeout("slow connect")) and not is_connect_error(
        mod.ConnectTimeout("x")
    )
    assert is_transport_error(reset) and not (is_connect_error(reset) or is_timeout_error(reset))
    assert not is_transport_error(mod.HTTPStatusError("500", request=None, response=None))  # type: ignore[arg-type]


def test_socket_level_failures_are_transport_failures() -> None:
    assert is_connect_error(ConnectionRefusedError()) and is_transport_error(ConnectionRefusedError())
    assert is_timeout_error(TimeoutError()) and is_transport_error(ConnectionResetError())
    for other in (ValueError("x"), json.JSONDecodeError("x", "", 0), KeyError("ConnectError")):
        assert not (is_connect_error(other) or is_timeout_error(other) or is_transport_error(other))
