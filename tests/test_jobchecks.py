"""The app's own settings refused with the key named (exit 2), never accepted as something else
(``runner.fsync=null`` read as false, ``maybe`` as true, a NaN poll interval, the current dir as the run
dir) nor failing inside (``+generation.stop_sequences=``: a TypeError)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfactory.job import app
from tests.job.test_app import app_config, run_app, write_items

BAD = [
    ("runner.fsync=null", "runner.fsync"),
    ("runner.retry_errors=maybe", "runner.retry_errors"),
    ("runner.progress=1", "runner.progress"),
    ("output.print_reply=yes", "output.print_reply"),
    ("+generation.stop_sequences=", "generation.stop_sequences"),
    ("+generation.stop_sequences=END", "generation.stop_sequences"),
    ("+generation.concurrency=4", "generation.concurrency"),
    ("output.results_file='.'", "output.results_file"),  # the run dir itself
    ("output.results_file=sub/", "output.results_file"),
]
BATCH = [
    ("runner.provider_batch.poll_s=nan", "runner.provider_batch.poll_s"),
    ("runner.provider_batch.poll_s=inf", "runner.provider_batch.poll_s"),
    ("runner.provider_batch.poll_s=abc", "runner.provider_batch.poll_s"),
    ("runner.provider_batch.poll_s=0", "runner.provider_batch.poll_s"),
    ("runner.provider_batch.max_wait=-1", "runner.provider_batch.max_wait"),
    ("runner.provider_batch.max_wait=nan", "runner.provider_batch.max_wait"),
    ("runner.provider_batch.max_requests=2.5", "runner.provider_batch.max_requests"),
]


@pytest.mark.parametrize(("override", "key"), BAD + BATCH, ids=[o for o, _ in BAD + BATCH])
def test_a_bad_setting_is_a_config_error_naming_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, key: str
) -> None:
    data = write_items(tmp_path / "items.jsonl", ["one"])
    extra = ["runner.provider_batch.enabled=true"] if override.startswith("runner.provider_batch.") else []
    cfg = app_config("model=custom_callable", "task=dataset", f"task.path={data}", *extra, override)
    assert app.run_job(cfg, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"{key}:" in err and "Traceback" not in err and "TypeError" not in err
    assert not (tmp_path / "out" / "results.jsonl").exists()  # refused before any item ran


def test_an_empty_run_dir_is_refused_not_the_current_dir(tmp_path: Path) -> None:
    proc = run_app(tmp_path / "unused", "model=custom_callable", "prompt=hi", "hydra.run.dir=")
    assert proc.returncode == 2, proc.stderr
    assert "hydra.run.dir" in proc.stderr and "Traceback" not in proc.stderr
    root = Path(__file__).resolve().parents[1]
    assert not (root / "result.json").exists() and not (root / "job.json").exists()
