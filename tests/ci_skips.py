"""A pytest plugin: under ``CI=true`` a test skipped because a module is missing FAILS instead.

``pytest.importorskip`` keeps a developer's partial install usable (no torch: the transformers tests are
skipped), but in CI every extra is installed on purpose, so a skip there means a broken install that
would silently drop a third of the backend tests. Module-level skips fail the collection of their file;
skips inside a test fail that test. Loaded by tests/conftest.py (``pytest_plugins``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from typing import Any

import pytest

# pytest.importorskip's reason: "could not import 'torch': No module named 'torch'"
_MISSING = re.compile(r"could not import '([^']+)'")


def ci_is_strict() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def _missing_module(report: pytest.CollectReport | pytest.TestReport) -> str | None:
    if not report.skipped:
        return None
    longrepr: Any = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    match = _MISSING.search(str(reason))
    return match.group(1) if match else None


def _fail(report: pytest.CollectReport | pytest.TestReport, module: str) -> None:
    report.outcome = "failed"
    report.longrepr = (
        f"CI=true and '{module}' cannot be imported, so these tests would have been skipped. CI installs "
        "every extra (scripts/setup.sh all,dev): fix the install, or declare the package in pyproject.toml."
    )


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, pytest.CollectReport, Any]:
    report = yield
    module = _missing_module(report) if ci_is_strict() else None
    if module is not None:
        _fail(report, module)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    module = _missing_module(report) if ci_is_strict() else None
    if module is not None:
        _fail(report, module)
    return report
