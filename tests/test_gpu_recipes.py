"""The GPU-node recipes (no GPU, no SLURM here): the launcher configs compose, `modelfactory check` passes
the models they run, and each per-job server recipe's setup lines really start a server, wait for it and
let the job reach it, with `modelfactory serve` standing in for vLLM / llama-server (same API)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from modelfactory.cli import main as cli_main
from tests.test_sweeps import CONF, ROOT

LAUNCHERS = ["slurm_gpu", "slurm_vllm", "slurm_llama_server"]


def _launcher(name: str) -> dict[str, object]:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert isinstance(launcher, dict)
    return launcher


@pytest.mark.parametrize("name", LAUNCHERS)
def test_gpu_launchers_compose_to_one_gpu_slurm_jobs(name: str) -> None:
    launcher = _launcher(name)
    assert str(launcher["_target_"]).endswith("SlurmLauncher")
    assert launcher["gpus_per_node"] == 1 and launcher["partition"] == "gpu"
    assert (launcher.get("setup") is None) == (name == "slurm_gpu")


@pytest.mark.parametrize(
    "overrides",
    [["model=transformers_smollm", "model.device=cuda"], ["model=gpu_server"]],
)
def test_check_passes_the_gpu_models(overrides: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--config-dir", str(CONF), "check", *overrides]) == 0, capsys.readouterr().out


SHIMS = {  # argument positions of `vllm serve M --host H --port P` and `llama-server -m F --host H --port P`
    "slurm_vllm": ("vllm", 6),
    "slurm_llama_server": ("llama-server", 6),
}


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("name", sorted(SHIMS))
def test_a_per_job_server_recipe_starts_serves_and_stops(name: str, tmp_path: Path) -> None:
    command, port_arg = SHIMS[name]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / command
    shim.write_text(  # the real server binary is not here: modelfactory serve speaks the same API
        f'#!/bin/bash\n[ "$3" = "--host" ] && [ "$4" = "127.0.0.1" ] || exit 9\ncd {ROOT}\n'
        f'exec {sys.executable} -m modelfactory.cli serve model=custom_callable server.port="${port_arg}"\n'
    )
    shim.chmod(0o755)
    setup = _launcher(name)["setup"]
    assert isinstance(setup, list)
    job = [
        "export SLURM_JOB_ID=4242",
        *map(str, setup),
        f"{sys.executable} {ROOT / 'run.py'} model=gpu_server prompt=hi hydra.run.dir={tmp_path / 'run'}",
        "echo server-pid=$MF_SERVER_PID",
    ]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MF_SERVER_MODEL": "custom_callable"}
    env.update(MF_SERVER_GGUF="/models/x.gguf", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        ["bash", "-c", "\n".join(job)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Echo: hi" in proc.stdout  # the job's reply came from the server its setup started
    pid = int(proc.stdout.split("server-pid=")[1].split()[0])
    port = 20000 + 4242 % 20000
    assert any(f"{port}" in p.read_text() for p in tmp_path.glob("*-4242.log"))  # its log, per job
    deadline = time.monotonic() + 60  # the trap sent it SIGTERM when the job ended: it shuts down
    while _alive(pid):
        assert time.monotonic() < deadline, f"server {pid} still running after the job"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
