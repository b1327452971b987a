"""Rules the test suite keeps about itself, checked like any other behaviour.

- No stopwatch asserts: a test never compares a measured duration (``time.perf_counter`` /
  ``time.monotonic`` / ``time.time`` differences, however the clock is imported, aliased or wrapped in a
  helper, or a value named like one: ``elapsed``, ``*latency*``, ``*duration*``) to a bound
  (tests/stopwatch_rule.py says exactly what counts). A deadline inside a polling loop, which only stops
  a hang, is allowed. Load alone fails such a test; concurrency, spacing and back-off are proved with
  counts and recorded waits instead (tests/timing.py). Benchmarks belong in bench/.
- No per-example Hypothesis deadline, for the same reason.
- Under ``CI=true`` every skip fails unless the test is marked ``allow_skip(reason=...)`` (tests/ci_skips.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.stopwatch_rule import stopwatch_asserts

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def test_no_test_asserts_on_a_stopwatch() -> None:
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        found += stopwatch_asserts(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == [], "wall-clock bounds in tests (prove it with counts or recorded waits):\n" + "\n".join(
        found
    )


@pytest.mark.parametrize(
    "source",
    [
        """
        def test_x():
            t0 = time.perf_counter()
            work()
            assert time.perf_counter() - t0 < 0.7
        """,
        """
        def test_x():
            start = time.monotonic()
            work()
            elapsed = time.monotonic() - start
            assert 0.15 <= elapsed
        """,
        """
        def test_x():
            stats = run()
            assert stats.elapsed_s < 40 * 0.05 / 3
        """,
        """
        def test_x():
            reply, took = timed(lambda: model(MSGS))
            assert took == pytest.approx(1.0, abs=0.5)
        """,
        """
        def test_x():
            t = time.time()
            go()
            if time.time() - t > 5:
                pytest.fail("slow")
        """,
        """
        class TestX:
            def test_x(self):
                start = perf_counter()
                assert perf_counter() - start <= 2
        """,
        """
        class Flaky:
            def _attempt(self):
                self.sent.append(time.monotonic())

        def test_x():
            model = Flaky()
            assert min(gaps(model.sent)) >= 0.095
        """,
        """
        def test_x():
            times = []
            for _ in range(3):
                limiter.acquire()
                times.append(time.monotonic())
            assert min(b - a for a, b in zip(times, times[1:])) >= 0.045
        """,
        """
        @settings(max_examples=5, deadline=500)
        def test_x():
            pass
        """,
        # the clock behind a helper: its return value is timed wherever it is used
        """
        def measure(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        def test_x():
            d = measure(work)
            assert d < 1.0
        """,
        """
        def now():
            return time.perf_counter()

        def test_x():
            t0 = now()
            work()
            d = now() - t0
            assert d < 1.0
        """,
        """
        def timed(fn):
            t0 = time.perf_counter()
            return fn(), time.perf_counter() - t0

        def test_x():
            reply, d = timed(work)
            assert d <= 1.0
        """,
        # ... or the bound behind one: a helper's parameter that callers pass a duration
        """
        def check_fast(d):
            assert d < 1.0

        def test_x():
            t0 = time.perf_counter_ns()
            work()
            check_fast(time.perf_counter_ns() - t0)
        """,
        # every spelling of a clock
        """
        from time import monotonic

        def test_x():
            a = monotonic()
            work()
            b = monotonic()
            assert b - a < 1.0
        """,
        """
        def test_x():
            a = time.perf_counter_ns()
            work()
            assert (time.perf_counter_ns() - a) / 1e9 < 1.0
        """,
        """
        from time import perf_counter as clock

        def test_x():
            a = clock()
            work()
            assert clock() - a < 1.0
        """,
        """
        import time as t

        def test_x():
            a = t.monotonic()
            work()
            assert t.monotonic() - a < 1.0
        """,
        """
        now = time.perf_counter

        def test_x():
            a = now()
            work()
            assert now() - a < 1.0
        """,
        """
        async def test_x():
            loop = asyncio.get_running_loop()
            a = loop.time()
            await work()
            assert loop.time() - a < 1.0
        """,
        """
        def test_x():
            a = timeit.default_timer()
            work()
            assert timeit.default_timer() - a < 1.0
        """,
        # every way of asserting
        """
        class T(unittest.TestCase):
            def test_x(self):
                a = time.monotonic()
                work()
                self.assertLess(time.monotonic() - a, 1.0)
        """,
        """
        def test_x():
            a = time.monotonic()
            work()
            fast = time.monotonic() - a < 1.0
            assert fast
        """,
        # a loop is a hang guard only for a raw reading against a deadline, not for a duration
        """
        def test_x():
            for _ in range(3):
                a = time.monotonic()
                while not done():
                    work()
                    assert time.monotonic() - a < 1.0
        """,
    ],
)
def test_the_stopwatch_rule_catches_each_shape(source: str) -> None:
    assert len(stopwatch_asserts(textwrap.dedent(source))) == 1


@pytest.mark.parametrize(
    "source",
    [
        """
        def test_x():  # a sanity check, not a bound: load cannot fail it
            assert row["latency_s"] >= 0
        """,
        """
        def wait_until_ready():  # a deadline loop in a fixture, not an assertion
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                poll()
        """,
        """
        def test_x():  # a polling loop's deadline: a hang guard
            deadline = time.monotonic() + 60
            while not ready():
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        """,
        """
        def test_x(virtual_clock):
            assert virtual_clock.sleeps == [0.05, 0.1]
            assert server.max_in_flight == 16
        """,
        """
        @settings(max_examples=5, deadline=None)
        def test_x():
            pass
        """,
        """
        def test_x():  # a raw reading against a deadline in a polling loop, by way of a name
            deadline = time.monotonic() + 60
            while True:
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError
                if ready():
                    break
        """,
        """
        def timed(fn):
            t0 = time.perf_counter()
            return fn(), time.perf_counter() - t0

        def test_x():  # only the timed position of a helper's tuple is timed
            reply, took = timed(work)
            assert len(reply.content) < 10
        """,
        """
        def check(n):
            assert n < 3

        def test_x():  # a helper's parameter is timed only when a caller passes a duration
            t0 = time.perf_counter()
            check(len(work()))
        """,
        """
        def test_x(virtual_clock):  # an injected clock is deterministic
            start = virtual_clock.monotonic()
            retry()
            assert virtual_clock.monotonic() - start == 0.15
        """,
    ],
)
def test_the_stopwatch_rule_leaves_deterministic_checks_alone(source: str) -> None:
    assert stopwatch_asserts(textwrap.dedent(source)) == []


# --------------------------------------------------------------------------- CI: every skip fails unless allowed


_NEEDS_MISSING = """
import pytest

pytest.importorskip("modelfactory_no_such_extra")


def test_uses_it():
    pass
"""

# One test per way to skip; the name says whether CI must let it through.
_SKIPS = """
import pytest


@pytest.fixture
def gpu():
    pytest.skip("no GPU here")


def test_fail_importorskip():
    pytest.importorskip("modelfactory_no_such_extra")


def test_fail_importorskip_custom_reason():
    pytest.importorskip("modelfactory_no_such_extra", reason="pip install modelfactory[extra]")


def test_fail_skip_in_test():
    pytest.skip("a GPU is present")


def test_fail_skip_in_fixture(gpu):
    pass


@pytest.mark.skipif(True, reason="the package is missing")
def test_fail_skipif():
    pass


@pytest.mark.skip(reason="later")
def test_fail_skip_mark():
    pass


@pytest.mark.allow_skip
def test_fail_allowed_without_reason():
    pytest.skip("no reason given for allowing it")


@pytest.mark.allow_skip(reason="needs a GPU")
def test_skip_allowed_in_test():
    pytest.skip("no GPU here")


@pytest.mark.allow_skip(reason="needs a GPU")
def test_skip_allowed_in_fixture(gpu):
    pass


@pytest.mark.allow_skip(reason="needs a GPU")
@pytest.mark.skipif(True, reason="no GPU here")
def test_skip_allowed_skipif():
    pass


@pytest.mark.allow_skip(reason="needs a GPU")
class TestAllowedClass:
    def test_skip_allowed_by_its_class(self):
        pytest.skip("no GPU here")


@pytest.mark.xfail(reason="a known bug", strict=True)
def test_xfail_is_no_skip():
    assert False


def test_pass():
    pass
"""

_MODULE_ALLOWED = """
import pytest

pytestmark = [pytest.mark.skipif(True, reason="no GPU here"), pytest.mark.allow_skip(reason="needs a GPU")]


def test_skip_allowed_by_its_module():
    pass
"""


def _run_pytest(
    tmp_path: Path, source: str, ci: str | None, **extra: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(source, encoding="utf-8")
    (tmp_path / "test_fine.py").write_text("def test_fine():\n    pass\n", encoding="utf-8")
    for name, text in extra.items():
        (tmp_path / f"{name}.py").write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    # Only the plugin under test: loading every installed plugin (hydra, anyio, xdist, ...) took 4.6 s a run.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.ci_skips", "-p", "no:cacheprovider"]
        + ["-rA", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _outcomes(stdout: str) -> dict[str, str]:
    """test name -> PASSED/FAILED/SKIPPED/XFAIL/ERROR, from the -rA summary (a skip line names no test:
    it is told by its reason)."""
    found = {}
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "XFAIL", "ERROR") and "::" in rest:
            found[rest.split("::")[-1].split(" ")[0]] = word
    return found


def test_a_module_level_importorskip_fails_collection_in_ci(tmp_path: Path) -> None:
    strict = _run_pytest(tmp_path, _NEEDS_MISSING, ci="true")
    assert strict.returncode != 0, strict.stdout
    assert "CI=true and this was skipped (could not import 'modelfactory_no_such_extra'" in strict.stdout
    last = strict.stdout.splitlines()[-1]
    assert "1 error" in last and "skipped" not in last


@pytest.mark.parametrize("ci", [None, "false", "0"])
def test_outside_ci_every_skip_still_skips(tmp_path: Path, ci: str | None) -> None:
    lenient = _run_pytest(tmp_path, _SKIPS, ci=ci, test_module=_NEEDS_MISSING)
    assert lenient.returncode == 0, lenient.stdout
    assert "2 passed, 12 skipped, 1 xfailed" in lenient.stdout.splitlines()[-1], lenient.stdout
    assert "allowed in CI" not in lenient.stdout


def test_in_ci_every_skip_fails_but_those_allowed_with_a_reason(tmp_path: Path) -> None:
    strict = _run_pytest(tmp_path, _SKIPS, ci="true", test_module_allowed=_MODULE_ALLOWED)
    outcomes = _outcomes(strict.stdout)
    # a skip in the setup phase (a fixture, a skip mark) fails as an error of that phase
    failed = sorted(name for name, word in outcomes.items() if word in ("FAILED", "ERROR"))
    assert failed == sorted(name for name in outcomes if name.startswith("test_fail_")), strict.stdout
    assert len(failed) == 7 and outcomes["test_xfail_is_no_skip"] == "XFAIL"
    assert strict.returncode == 1
    assert "4 failed, 2 passed, 5 skipped, 1 xfailed, 3 errors" in strict.stdout.splitlines()[-1]
    # each allowed skip says both why it was skipped and why CI may skip it
    assert strict.stdout.count("(allowed in CI: needs a GPU)") == 5
    assert "CI=true and this was skipped (pip install modelfactory[extra])" in strict.stdout
    assert "CI=true and this was skipped (no reason given for allowing it)" in strict.stdout


def _planted_mutants() -> list[tuple[str, str, str, str, list[str]]]:
    """scripts/mutants.sh's planted bugs as it reads them: (name, file, text, replacement, test ids)."""
    script = (ROOT / "scripts" / "mutants.sh").read_text()
    rows = []
    for line in script.split("\nmutants=(\n", 1)[1].split("\n)\n", 1)[0].splitlines():
        entry = line.strip()[1:-1].replace('\\"', '"').replace("\\\\", "\\")  # bash's "..." unescaped
        name, file, old, new, tests = entry.split("|")
        rows.append((name, file, old.replace("<NL>", "\n"), new.replace("<NL>", "\n"), tests.split()))
    return rows


def test_every_planted_mutant_still_applies_to_the_code() -> None:
    """scripts/mutants.sh (~3 min, not part of the suite) plants each bug by its exact text. A later
    refactor of serve/routes.py changed the content-length check's text, and the script reported that
    mutant as "could not be applied" until someone ran it: here each text is in its file exactly once
    (what the script needs) and each test meant to catch it exists."""
    mutants = _planted_mutants()
    assert [m[0] for m in mutants] == [
        "hf",
        "anthropic",
        "repair_tail",
        "pricing",
        "settings",
        "content_length",
    ]
    for name, file, old, new, tests in mutants:
        assert old != new and tests, name
        assert (ROOT / file).read_text().count(old) == 1, f"mutant {name}: {old!r} is not once in {file}"
        for node in tests:
            path, _, func = node.partition("::")
            assert (ROOT / path).is_file(), f"mutant {name}: no {path}"
            assert not func or f"def {func.split('[')[0]}(" in (ROOT / path).read_text(), f"{name}: {node}"
