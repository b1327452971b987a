"""Shared fixtures. Every server here listens on 127.0.0.1 only; no test sends traffic elsewhere.

Suite-wide rules set here: under ``CI=true`` a skip fails unless marked ``allow_skip`` (tests/ci_skips.py);
Hypothesis has no deadline (a wall-clock limit per example would fail on a loaded machine, not on a bug).
"""

from __future__ import annotations

import compileall
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from modelfactory.clock import use_clock
from tests.servers.recording import RecordingServer
from tests.timing import VirtualClock

pytest_plugins = ["tests.ci_skips"]


def pytest_configure(config: pytest.Config) -> None:
    from modelfactory.job.spec import register_configs
    from tests.ci_skips import ci_is_strict  # loaded by now, as a plugin

    register_configs()  # tests compose conf/config.yaml with Hydra's API, as `modelfactory run` does
    if sys.dont_write_bytecode and not hasattr(config, "workerinput"):  # once, before any worker starts
        _compile_our_sources()

    # A suite started in the background of a script (`cmd &` without job control) inherits SIGINT ignored,
    # and so would every run.py a test starts: the Ctrl-C tests would see a run that cannot be interrupted.
    # A handler here (each xdist worker loads this file too) becomes SIG_DFL in a child, which Python
    # turns into KeyboardInterrupt again.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    # Hypothesis' own "ci" profile in CI (derandomized: the same examples every run), else "default".
    settings.register_profile(
        "modelfactory",
        parent=settings.get_profile("ci" if ci_is_strict() else "default"),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile("modelfactory")


def _compile_our_sources() -> None:
    """Where ``PYTHONDONTWRITEBYTECODE`` is set (this project's CI machines set it), no process writes
    bytecode, so every Python process the suite starts (each ``run.py``, ``python -c``, served model and
    inner pytest) compiled again each modelfactory and tests module it imported: the modules' own import
    time was 1.8x that with bytecode on disk (~0.2 s of each ``run.py`` under load). Written here once
    (about a second), they are read by every later process; a .pyc whose source changed is not used
    (Python checks the source's mtime and size), and ``__pycache__/`` is git-ignored."""
    root = Path(__file__).resolve().parents[1]
    for folder in ("modelfactory", "tests", "examples"):
        compileall.compile_dir(root / folder, quiet=2, rx=re.compile(r"[/\\]tests[/\\]data[/\\]"))
    compileall.compile_file(root / "run.py", quiet=2)


# Secrets and endpoints of the developer's shell must never leak into tests (or out of them).
_ENV_TO_CLEAR = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_API_VERSION",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_MODEL",
    "AZURE_OPENAI_AD_TOKEN",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_ENDPOINT",
    "ANTHROPIC_API_KEY",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def recording_server() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


@pytest.fixture
def virtual_clock() -> Iterator[VirtualClock]:
    """Every retry wait and rate-limit wait of the test goes to this clock: recorded, never slept."""
    with use_clock(VirtualClock()) as clock:
        yield clock


os.environ.setdefault("HYDRA_FULL_ERROR", "0")


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, its schema migrated once. A fresh store costs run.py ~8 s of Alembic
    migrations (11.8 s vs 3.8 s for a test); what the tests check (runs, experiments, artifacts) all
    happens after that, so the tests start from a copy (``mlflow_store`` in tests/test_tracking.py), but
    one (``test_mlflow_uri_from_the_environment_and_a_single_run``), which keeps run.py creating its own.
    Here, not in tests/test_tracking.py: tests/test_batch_sweep.py's MLflow sweep starts from it too.

    Made once for every xdist worker of a run, and kept for later runs, in pytest's temp root (shared by
    the workers), one file per MLflow version (its schema), written whole or not at all."""
    import fcntl

    import mlflow
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    root = tmp_path_factory.getbasetemp().parent  # xdist: the workers' common parent
    db = root / f"mlflow-{mlflow.__version__}-template.db"
    with open(root / f"{db.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker migrates; the others wait for its file
        if not db.exists():
            partial = root / f"{db.name}.{os.getpid()}.partial"
            store = SqlAlchemyStore(f"sqlite:///{partial}", (root / "mlflow-template-artifacts").as_uri())
            store.engine.dispose()  # closed: the file is a whole database
            os.replace(partial, db)
    return db
