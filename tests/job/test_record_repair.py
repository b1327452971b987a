"""results.repair_tail: what a crash mid-write leaves at the end of a results file, made appendable again.

A complete last row without its newline (the crash fell between the row and its ``\\n``) is kept and
completed; a torn one (cut inside the JSON) is cut off; every earlier row stays as it was, however long
the file (the last line is found by reading back in 64 KiB blocks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelfactory.job.record import read_results, repair_tail

rows = st.lists(
    st.fixed_dictionaries({"id": st.text(min_size=1, max_size=8), "content": st.text(max_size=40)}),
    min_size=1,
    max_size=6,
    unique_by=lambda r: r["id"],
)
padding = st.sampled_from([0, 70_000])  # a long earlier row: the last line starts past the first block


def _write(path: Path, lines: list[str], tail: str) -> None:
    path.write_bytes(("".join(line + "\n" for line in lines) + tail).encode("utf-8"))


def _lines(items: list[dict[str, str]], pad: int) -> list[str]:
    return [json.dumps({**r, "pad": "x" * pad} if i == 0 else r) for i, r in enumerate(items)]


@given(items=rows, pad=padding)
def test_a_complete_last_row_without_its_newline_is_kept(
    tmp_path_factory: pytest.TempPathFactory, items: list[dict[str, str]], pad: int
) -> None:
    path = tmp_path_factory.mktemp("r") / "results.jsonl"
    *before, last = _lines(items, pad)
    _write(path, before, last)  # no "\n" after the last row
    repair_tail(path)
    assert path.read_bytes().decode("utf-8") == "".join(line + "\n" for line in [*before, last])
    assert list(read_results(path)) == [r["id"] for r in items]


@given(items=rows, pad=padding, cut=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_a_torn_last_row_is_cut_off_and_the_rest_kept(
    tmp_path_factory: pytest.TempPathFactory, items: list[dict[str, str]], pad: int, cut: float
) -> None:
    path = tmp_path_factory.mktemp("r") / "results.jsonl"
    *before, last = _lines(items, pad)
    torn = last[: max(1, int(len(last) * cut))]  # a strict prefix of a JSON object never parses
    _write(path, before, torn)
    repair_tail(path)
    assert path.read_bytes().decode("utf-8") == "".join(line + "\n" for line in before)
    assert list(read_results(path)) == [r["id"] for r in items[:-1]]


def test_a_whole_file_and_an_empty_one_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"")
    repair_tail(path)
    assert path.read_bytes() == b""
    whole = b'{"id": "a"}\n{"id": "b"}\n'
    path.write_bytes(whole)
    repair_tail(path)
    assert path.read_bytes() == whole
    repair_tail(tmp_path / "absent.jsonl")
    assert not (tmp_path / "absent.jsonl").exists()
