"""The run's records on disk: written whole or not at all (a full disk keeps the old record), and an
empty or torn ``job.json`` read as a job that did not finish, named as such in the sweep summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelfactory.errors import DataError
from modelfactory.job.record import JOB_FILE, atomic_open, collect_jobs, read_job, write_job

ROOT = Path(__file__).resolve().parents[2]

# The job record rewritten in a process whose files may not grow past 200 bytes: a full disk.
FULL_DISK = """
import resource, signal, sys
from modelfactory.job.record import write_job
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))
try:
    write_job(sys.argv[1], {"runs": 2, "note": "x" * 1000})
except OSError as exc:
    print(type(exc).__name__, exc.errno)
"""


def _job_dir(root: Path, n: int, record: bytes | None) -> Path:
    job = root / str(n)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- model=m{n}\n")
    (job / "results.jsonl").write_text(
        json.dumps({"id": "a", "content": "x", "usage": None, "error": None}) + "\n"
    )
    if record is not None:
        (job / JOB_FILE).write_bytes(record)
    return job


def test_a_full_disk_keeps_the_old_job_record(tmp_path: Path) -> None:
    write_job(tmp_path, {"runs": 1, "error": None})
    before = (tmp_path / JOB_FILE).read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.split()[0] == "OSError", (proc.stdout, proc.stderr)
    assert (tmp_path / JOB_FILE).read_bytes() == before  # the old record whole, not an empty file
    assert sorted(p.name for p in tmp_path.iterdir()) == [JOB_FILE]  # no temporary file left behind


def test_atomic_open_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_open(path) as f:
        f.write("half of the new")
        raise RuntimeError("the writer failed")
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
    with atomic_open(path) as f:
        f.write("new\n")
    assert path.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


@pytest.mark.parametrize("record", [b"", b"{", b'{"runs": 1, "error": nu', b"[]", b"{}", b"\x00\x00"])
def test_an_unreadable_job_record_is_an_unfinished_job_named_in_the_summary(
    tmp_path: Path, record: bytes
) -> None:
    _job_dir(tmp_path, 0, json.dumps({"model": "m0", "error": None, "elapsed_s": 1.0}).encode())
    bad = _job_dir(tmp_path, 1, record)
    _job_dir(tmp_path, 2, None)
    assert read_job(bad) is None
    jobs = {j["job"]: j for j in collect_jobs(tmp_path)}
    assert jobs[0]["error"] is None  # a finished job
    assert "job.json is unreadable" in jobs[1]["error"] and "did not finish" in jobs[1]["error"]
    assert jobs[2]["error"] == "no job.json: the job did not finish"


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=64))
def test_read_job_never_raises_and_never_takes_garbage_for_a_record(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / JOB_FILE).write_bytes(data)
        got = read_job(d)
    assert got is None or (isinstance(got, dict) and got)


def test_a_corrupt_batches_json_names_the_file_and_the_fix(tmp_path: Path) -> None:
    from modelfactory.batch import BatchState

    for text in ("", "{", '{"version": 1}', '{"batches": [{"nope": 1}]}', "[]"):
        (tmp_path / "batches.json").write_text(text)
        with pytest.raises(DataError) as info:
            BatchState.load(tmp_path / "batches.json")
        assert str(tmp_path / "batches.json") in str(info.value) and "delete the file" in str(info.value)
