"""The OpenMP wait policy modelfactory sets before it imports torch (backends/transformers/_threads.py).

Each case runs in a fresh process: libgomp reads the policy once, when torch loads it. What libgomp
actually applied is read from its own report (``OMP_DISPLAY_ENV=VERBOSE`` prints its settings to stderr
at start-up): ``GOMP_SPINCOUNT = '0'`` under PASSIVE, ``'300000'`` under its default.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOAD = (
    "import os\n"
    "from modelfactory import TransformersModel\n"
    "m = TransformersModel(model_id='builtin:tiny-llama', max_new_tokens=2).load()\n"
    "print('policy', os.environ.get('OMP_WAIT_POLICY'))\n"
)


def _run(code: str, **env: str) -> tuple[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), "OMP_DISPLAY_ENV": "VERBOSE", "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout, out.stderr


def _spin(stderr: str) -> str:
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", stderr)
    assert found, stderr[-2000:]
    return found.group(1)


def test_loading_a_model_imports_torch_with_the_passive_policy() -> None:
    pytest.importorskip("torch")
    stdout, stderr = _run(LOAD)
    assert "policy PASSIVE" in stdout
    assert _spin(stderr) == "0"  # libgomp applied it: waiting threads sleep at once


@pytest.mark.parametrize(
    ("var", "value", "spin"), [("GOMP_SPINCOUNT", "300000", "300000"), ("OMP_WAIT_POLICY", "ACTIVE", None)]
)
def test_a_policy_the_user_set_is_kept(var: str, value: str, spin: str | None) -> None:
    pytest.importorskip("torch")
    stdout, stderr = _run(LOAD, **{var: value})
    assert "policy PASSIVE" not in stdout
    if spin is not None:
        assert _spin(stderr) == spin


def test_torch_imported_first_is_left_as_it_is() -> None:
    """Too late to change libgomp: the environment is not touched either (it would only mislead)."""
    pytest.importorskip("torch")
    stdout, stderr = _run("import torch\n" + LOAD)
    assert "policy None" in stdout
    assert _spin(stderr) == "300000"


def test_wait_policy_names_what_the_environment_asks_for(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelfactory.backends.transformers._threads import wait_policy

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert "libgomp's default" in wait_policy()
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert wait_policy() == "OMP_WAIT_POLICY=PASSIVE"
