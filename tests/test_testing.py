"""modelfactory.testing: the fake OpenAI-compatible server users can put in their own tests."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest

from modelfactory import OpenAIServerModel
from modelfactory.errors import BackendError
from modelfactory.testing import RecordingServer


def test_the_documented_example() -> None:
    # The example of the module docstring, as written there.
    with RecordingServer(reply="Paris") as server:  # started on a free port, stopped on exit
        model = OpenAIServerModel(model_id="any", api_base=f"{server.url}/v1", api_key="test")
        assert model([{"role": "user", "content": "Capital of France?"}]).content == "Paris"
    assert server.last.body["messages"][-1]["content"] == "Capital of France?"
    assert server.last.headers["authorization"] == "Bearer test"


def test_streams_echoes_and_scripted_answers() -> None:
    with RecordingServer(echo=True) as server:
        model = OpenAIServerModel(model_id="any", api_base=f"{server.url}/v1", api_key="test", max_retries=0)
        deltas = list(model.generate_stream([{"role": "user", "content": "say this back"}]))
        assert "".join(d.content or "" for d in deltas) == "say this back"
        assert deltas[-1].token_usage is not None and deltas[-1].token_usage.total_tokens == 12
        server.enqueue(
            429, {"error": {"message": "slow down", "type": "requests"}}, headers={"retry-after": "0"}
        )
        with pytest.raises(BackendError) as info:
            model([{"role": "user", "content": "x"}])
        assert info.value.status == 429 and "slow down" in str(info.value)
        assert [r.path for r in server.requests] == ["/v1/chat/completions"] * 2


def test_runs_in_its_own_process() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "modelfactory.testing"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{url}/_stats", timeout=30) as resp:
            assert resp.read() == b'{"requests": 0, "injected_failures": 0}'
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_old_test_path_is_the_same_server() -> None:
    from tests.servers.recording import RecordingServer as Old

    assert Old is RecordingServer
