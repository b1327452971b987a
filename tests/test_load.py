"""The load test at CI size: 500 requests at concurrency 64 through the runner, 1% injected failures.

``python -m bench.load`` runs the full 5,000-request version and prints the report.
"""

from __future__ import annotations

import pytest

from bench.load import failing_server, run_load

pytestmark = [pytest.mark.slow, pytest.mark.server]


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_every_item_gets_exactly_one_row(max_attempts: int) -> None:
    with failing_server(fail_rate=0.01) as url:
        report = run_load(url, requests=500, concurrency=64, max_attempts=max_attempts)
    assert report["problems"] == [], report
    assert report["through"] == "modelfactory.job.runner.run_items"
    assert (report["rows"], report["lost"], report["duplicated"], report["mismatched"]) == (500, 0, 0, 0)
    assert report["ok"] + report["failed"] == 500
    if max_attempts == 1:  # each failure is an error row; one request per item, never a hidden retry
        assert report["failed"] == report["injected_failures"] + report["transport_errors"]
        assert report["server_requests"] <= 500
    else:  # 1% failures are absorbed by the retry policy: one extra request per injected failure
        assert report["failed"] == 0
        assert report["server_requests"] == 500 + report["injected_failures"]
    assert report["rss_peak_during_run_mib"] - report["rss_before_mib"] < 100  # bounded, not per item
