"""modelfactory._envfile: the one ./.env loader of every entry point."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelfactory._envfile import load_dotenv


def test_load_dotenv_keeps_the_real_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("MF_TEST_A_KEY=from-file\nMF_TEST_B_KEY=from-file\n", encoding="utf-8")
    monkeypatch.setenv("MF_TEST_A_KEY", "from-env")
    monkeypatch.delenv("MF_TEST_B_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    try:
        assert load_dotenv() == ["MF_TEST_B_KEY"]
        assert os.environ["MF_TEST_A_KEY"] == "from-env" and os.environ["MF_TEST_B_KEY"] == "from-file"
    finally:
        monkeypatch.delenv("MF_TEST_B_KEY", raising=False)
