"""Rules the test suite keeps about itself, checked like any other behaviour.

- No stopwatch asserts: a test never compares a measured duration (``time.perf_counter`` /
  ``time.monotonic`` / ``time.time`` differences, or a value named like one: ``elapsed``, ``*latency*``,
  ``*duration*``) to a bound. (A deadline inside a polling loop, which only stops a hang, is allowed.) Load alone fails such a test; concurrency, spacing and back-off are proved
  with counts and recorded waits instead (tests/timing.py). Benchmarks belong in bench/.
- No per-example Hypothesis deadline, for the same reason.
- Under ``CI=true`` a missing optional dependency fails the run instead of skipping (tests/ci_skips.py).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

_CLOCKS = {"perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "time", "time_ns", "process_time"}
_TIMED_NAME = re.compile(r"elapsed|latency|duration|took|wall_?s\b|_secs?\b", re.IGNORECASE)
_ORDER = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)


def _is_clock_call(node: ast.AST) -> bool:
    """``time.perf_counter()`` and friends, or a bare ``perf_counter()`` imported from time."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr in _CLOCKS and isinstance(func.value, ast.Name) and func.value.id == "time"
    return isinstance(func, ast.Name) and func.id in _CLOCKS - {"time"}


def _is_zero(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in (0, 0.0) and not isinstance(node.value, bool)


class _Finder:
    """Names (per function) and attributes (per module) that hold a clock reading or a value computed from
    one, then every comparison in an ``assert`` or a ``pytest.fail`` branch that puts such a value against
    a bound."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.found: dict[int, str] = {}
        self.attributes: set[str] = set()  # self.sent.append(time.monotonic()) -> any `.sent` is timed

    def collect(self, node: ast.AST, timed: set[str]) -> None:
        """Grow ``timed`` (and ``self.attributes``) until nothing new is found."""
        changed = True
        while changed:  # t0 = perf_counter(); elapsed = perf_counter() - t0; times.append(elapsed); ...
            changed = False
            for sub in ast.walk(node):
                targets: list[ast.AST] = []
                if (
                    isinstance(sub, (ast.Assign, ast.AnnAssign, ast.AugAssign))
                    and sub.value is not None
                    and self._timed(sub.value, timed)
                ):
                    targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                elif (
                    isinstance(sub, ast.Call)
                    and isinstance(sub.func, ast.Attribute)
                    and sub.func.attr in ("append", "extend", "add", "insert")
                    and any(self._timed(arg, timed) for arg in sub.args)
                ):
                    targets = [sub.func.value]
                for target in targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name) and name.id not in timed and name.id != "self":
                            timed.add(name.id)
                            changed = True
                        elif (
                            isinstance(target, ast.Attribute)
                            and name is target
                            and target.attr not in self.attributes
                        ):
                            self.attributes.add(target.attr)
                            changed = True

    def check_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        timed: set[str] = set()
        self.collect(node, timed)
        # A deadline inside a polling loop (wait for a condition, give up after a generous time) is a hang
        # guard like pytest-timeout, not a bound on how long something took: those loops are left alone.
        polling = {id(n) for loop in ast.walk(node) if isinstance(loop, ast.While) for n in ast.walk(loop)}
        for sub in ast.walk(node):
            if id(sub) in polling:
                continue
            if (
                isinstance(sub, ast.Assert)
                or isinstance(sub, ast.If)
                and any(_calls_fail(s) for s in sub.body)
            ):
                self._check(sub.test, timed)

    def _timed(self, expr: ast.AST, timed: set[str]) -> bool:
        for sub in ast.walk(expr):
            if _is_clock_call(sub):
                return True
            if isinstance(sub, ast.Name) and (sub.id in timed or _TIMED_NAME.search(sub.id)):
                return True
            if isinstance(sub, ast.Attribute) and (
                sub.attr in self.attributes or _TIMED_NAME.search(sub.attr)
            ):
                return True
            if (
                isinstance(sub, ast.Subscript)
                and isinstance(sub.slice, ast.Constant)
                and isinstance(sub.slice.value, str)
                and _TIMED_NAME.search(sub.slice.value)
            ):
                return True
        return False

    def _check(self, test: ast.AST, timed: set[str]) -> None:
        for cmp in (n for n in ast.walk(test) if isinstance(n, ast.Compare)):
            operands = [cmp.left, *cmp.comparators]
            for op, left, right in zip(cmp.ops, operands[:-1], operands[1:], strict=True):
                if not isinstance(op, _ORDER):
                    continue
                for measured, bound in ((left, right), (right, left)):
                    if not self._timed(measured, timed) or _is_zero(bound) or self._timed(bound, set()):
                        continue
                    # == a constant: a formatting check on fixed data; == approx(...): a bound in disguise
                    if isinstance(op, (ast.Eq, ast.NotEq)) and "approx" not in ast.unparse(bound):
                        continue
                    self.found[cmp.lineno] = f"{self.path}:{cmp.lineno}: {ast.unparse(cmp)}"
                    break


def _calls_fail(stmt: ast.stmt) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "fail"
        for n in ast.walk(stmt)
    ) or isinstance(stmt, ast.Raise)


def _deadlines(tree: ast.AST, path: str) -> list[str]:
    """``settings(deadline=<anything but None>)``."""
    out = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) == "settings"
        ):
            for kw in node.keywords:
                if kw.arg == "deadline" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is None
                ):
                    out.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    return out


def stopwatch_asserts(source: str, path: str = "<src>") -> list[str]:
    tree = ast.parse(source)
    finder = _Finder(path)
    functions = [
        node
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_top_level_def(tree, node)
    ]
    for node in functions:  # first the module's timed attributes, then each function's checks
        finder.collect(node, set())
    for node in functions:  # (nested functions are walked with their parent)
        finder.check_function(node)
    return sorted(finder.found.values()) + _deadlines(tree, path)


def _is_top_level_def(tree: ast.AST, node: ast.AST) -> bool:
    """Functions at module level or methods of a module-level class (nested ones go with their parent)."""
    for top in getattr(tree, "body", []):
        if top is node:
            return True
        if isinstance(top, ast.ClassDef) and node in top.body:
            return True
    return False


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
    ],
)
def test_the_stopwatch_rule_leaves_deterministic_checks_alone(source: str) -> None:
    assert stopwatch_asserts(textwrap.dedent(source)) == []


# --------------------------------------------------------------------------- CI: missing extras fail


_NEEDS_MISSING = """
import pytest

pytest.importorskip("modelfactory_no_such_extra")


def test_uses_it():
    pass
"""

_SKIPS_INSIDE = """
import pytest


def test_needs_it():
    pytest.importorskip("modelfactory_no_such_extra")


def test_skipped_for_another_reason():
    pytest.skip("a GPU is present")
"""


def _run_pytest(tmp_path: Path, source: str, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(source, encoding="utf-8")
    (tmp_path / "test_fine.py").write_text("def test_fine():\n    pass\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.ci_skips",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
        ]
        + ["-rA", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_module_level_importorskip_fails_collection_in_ci(tmp_path: Path) -> None:
    strict = _run_pytest(tmp_path, _NEEDS_MISSING, ci="true")
    assert strict.returncode != 0, strict.stdout
    assert "CI=true and 'modelfactory_no_such_extra' cannot be imported" in strict.stdout
    last = strict.stdout.splitlines()[-1]
    assert "1 error" in last and "skipped" not in last


@pytest.mark.parametrize("ci", [None, "false", "0"])
def test_outside_ci_a_missing_extra_still_skips(tmp_path: Path, ci: str | None) -> None:
    lenient = _run_pytest(tmp_path, _NEEDS_MISSING, ci=ci)
    assert lenient.returncode == 0, lenient.stdout
    assert "1 passed, 1 skipped" in lenient.stdout.splitlines()[-1]


def test_a_skip_inside_a_test_fails_in_ci_but_other_skips_stay_skips(tmp_path: Path) -> None:
    strict = _run_pytest(tmp_path, _SKIPS_INSIDE, ci="true")
    last = strict.stdout.splitlines()[-1]
    assert strict.returncode == 1 and "1 failed, 1 passed, 1 skipped" in last, strict.stdout
    assert "FAILED test_inner.py::test_needs_it" in strict.stdout
    assert "SKIPPED [1] test_inner.py:10: a GPU is present" in strict.stdout
