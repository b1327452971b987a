"""Fixtures for backend tests: the real LiteLLM proxy (session-scoped, started once, ~6-8 s)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.litellm_proxy import LiteLLMProxy, ProxyStartError


@pytest.fixture(scope="session")
def litellm_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiteLLMProxy]:
    """A running LiteLLM proxy on 127.0.0.1 with mock models; stopped (process group ended) at session end.

    A proxy that does not start is a failure with its log tail, never a skip.
    """
    proxy = LiteLLMProxy(tmp_path_factory.mktemp("litellm_proxy"))
    try:
        proxy.start()
    except ProxyStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield proxy
    finally:
        proxy.stop()
