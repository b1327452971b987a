"""Shared fixtures. Every server here listens on 127.0.0.1 only; no test sends traffic elsewhere."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from modelfactory.clock import use_clock
from tests.servers.recording import RecordingServer
from tests.timing import VirtualClock

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
