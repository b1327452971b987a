"""A pytest plugin: under ``CI=true`` every skip FAILS unless the test carries an allow-marker with a reason.

Skips keep a developer's partial install usable (no torch: the transformers tests are skipped), but CI
installs every extra on purpose, so a skip there is a broken install or a forgotten condition that would
silently drop tests. Whatever raised it (``pytest.importorskip`` with or without a custom reason,
``pytest.skip`` in a test or a fixture, ``skipif``/``skip`` marks, a module-level skip), it fails, unless
the test (or its class or module, through ``pytestmark``) is marked
``@pytest.mark.allow_skip(reason="needs a GPU")``: a skip CI may legitimately see, said in words.

A module-level skip fails the collection of its file: it stops the import, so no marker can be read. A
module that may be skipped as a whole in CI says so with marks instead:
``pytestmark = [pytest.mark.skipif(cond, reason=...), pytest.mark.allow_skip(reason=...)]``.
An expected failure (xfail) is not a skip. Loaded by tests/conftest.py (``pytest_plugins``).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

MARKER = "allow_skip"


def ci_is_strict() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def pytest_configure(config: pytest.Config) -> None:
    # also declared in pyproject.toml; here too, so a run in another rootdir (tests of this plugin) knows it
    config.addinivalue_line(
        "markers",
        f'{MARKER}(reason): this test may be skipped under CI=true ("needs a GPU"); without it a skip fails',
    )


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str | None:
    """The reason of a real skip (not an xfail, which pytest also reports as skipped), else None."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return None
    longrepr: Any = report.longrepr
    reason = str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)
    return reason.removeprefix("Skipped: ")


def _allowed(item: pytest.Item) -> str | None:
    """The allow-marker's reason, or None when the test has none or one without a reason (which allows
    nothing: the point is that an allowed skip says why CI may see it)."""
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    reason = marker.kwargs.get("reason", marker.args[0] if marker.args else None)
    return reason if isinstance(reason, str) and reason.strip() else None


def _fail(report: pytest.CollectReport | pytest.TestReport, reason: str, fix: str) -> None:
    report.outcome = "failed"
    report.longrepr = (
        f"CI=true and this was skipped ({reason}). In CI every extra is installed (scripts/setup.sh "
        f"all,dev), so a skip is a broken install or a forgotten condition: fix it, or {fix}."
    )


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, pytest.CollectReport, Any]:
    report = yield
    reason = _skip_reason(report) if ci_is_strict() else None
    if reason is not None:
        _fail(
            report,
            reason,
            "if CI may skip the whole module, use pytestmark = [pytest.mark.skipif(...), "
            f'pytest.mark.{MARKER}(reason="...")] instead of a module-level skip',
        )
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    reason = _skip_reason(report) if ci_is_strict() else None
    if reason is not None:
        allowed = _allowed(item)
        if allowed is None:
            _fail(
                report,
                reason,
                f'mark the test @pytest.mark.{MARKER}(reason="why CI may skip it"), with a reason',
            )
        elif isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
            path, line, text = report.longrepr
            report.longrepr = (path, line, f"{text} (allowed in CI: {allowed})")
    return report
