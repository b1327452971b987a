"""Import costs that users notice: `import modelfactory` is cheap, and an API-only run of the app never
imports torch, transformers or litellm (checked through ``sys.modules`` of a real run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.servers.recording import RecordingServer

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "litellm", "huggingface_hub", "smolagents")

PROBE = """
import json, runpy, sys
sys.argv = ["run.py", *sys.argv[1:]]
try:
    runpy.run_path("run.py", run_name="__main__")
except SystemExit as exc:
    assert not exc.code, exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
# The openai SDK's chat resource modules cost ~0.4 s to import; our wire posts without them.
heavy += [m for m in ("openai.resources.chat",) if m in sys.modules]
print("HEAVY=" + json.dumps(heavy))
"""


def loaded_after(*argv: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.replace("%r", repr(HEAVY)), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("HEAVY="))
    return json.loads(line.removeprefix("HEAVY="))


def test_import_modelfactory_loads_no_sdk() -> None:
    banned = (*HEAVY, "openai", "pydantic", "hydra")
    code = f"import sys, modelfactory; print(sorted(m for m in sys.modules if m.split('.')[0] in {banned!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_api_only_run_never_imports_torch_transformers_or_litellm(tmp_path: Path) -> None:
    with RecordingServer() as server:
        heavy = loaded_after(
            "model=local_server", f"model.api_base={server.url}/v1", f"hydra.run.dir={tmp_path}"
        )
        assert server.requests, "the run must really have called the server"
    assert heavy == []


def test_callable_run_imports_no_sdk(tmp_path: Path) -> None:
    assert loaded_after("model=custom_callable", f"hydra.run.dir={tmp_path}") == []
