"""``modelfactory estimate``: a dry run that counts and prices a job without sending anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelfactory.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_estimate_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "items.jsonl"
    # 8 and 16 characters: chars/4 gives 2 and 4 prompt tokens
    data.write_text(
        json.dumps({"id": "a", "prompt": "12345678"})
        + "\n"
        + json.dumps({"id": "b", "prompt": "x" * 16})
        + "\n"
    )
    code = main(
        [
            "--config-dir",
            str(ROOT / "modelfactory" / "conf"),
            "estimate",
            "model=local_server",
            "model.api_base=http://127.0.0.1:9/v1",  # nothing listens there: nothing may be sent
            "++model.model_id=test-model",
            "++model.price={input: 1000, output: 2000}",
            "task=dataset",
            f"task.path={data}",
            "generation.max_tokens=10",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "items:          2" in out
    assert "input tokens:   6 (counted with chars/4 heuristic)" in out
    assert "output tokens:  20 (assumed: 10 per item (max_tokens))" in out
    # 6 x $0.001 + 20 x $0.002 = $0.046 online, half in batch
    assert "cost online:    $0.0460" in out and "cost batch:     $0.0230" in out


def test_estimate_local_model_counts_with_its_tokenizer(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--config-dir",
            str(ROOT / "modelfactory" / "conf"),
            "estimate",
            "model=transformers_tiny",
            "prompt=hello there",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "(counted with model tokenizer)" in out and "cost online:    unknown" in out
