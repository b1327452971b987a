"""The package as a user installs it: the wheel, built from this checkout, installed into a fresh venv
outside the repo, runs ``modelfactory list`` / ``check`` / ``run`` and a ``-m`` sweep from an empty
directory, then again from a directory with its own ``conf/model/mine.yaml``.

Offline: the wheel is built with ``pip wheel --no-build-isolation`` (the test venv's setuptools) and
installed with ``--no-index --no-deps``; the fresh venv sees the dependencies through a ``.pth`` line
naming the test venv's site-packages (no download). No PYTHONPATH, and every command runs outside the
repo, so only the installed wheel can answer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDERS = {  # what `modelfactory check` of every shipped config needs set (as scripts/test.sh does)
    "OPENAI_API_KEY": "placeholder",
    "AZURE_OPENAI_API_KEY": "placeholder",
    "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com",
    "AZURE_OPENAI_MODEL": "gpt-4o",
    "OPENAI_API_VERSION": "2024-10-21",
    "HF_TOKEN": "placeholder",
    "ANTHROPIC_API_KEY": "placeholder",
}

pytestmark = pytest.mark.slow


def _build_wheel(tmp: Path) -> Path:
    """Build from a copy of the package's sources, so the checkout gets no build/ or egg-info."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "modelfactory", src / "modelfactory", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            out,
            src,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (wheel,) = out.glob("modelfactory-*.whl")
    return wheel


def _venv_with(wheel: Path, tmp: Path) -> Path:
    """A fresh venv holding only the wheel; the test venv's site-packages reached by a .pth line."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", py, "install", "--no-index", "--no-deps", "-q", wheel],
        # no PYTHONPATH: one naming a checkout with modelfactory.egg-info made pip call the wheel
        # "already satisfied" and install nothing
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Appended after the venv's own site-packages: the wheel's modelfactory wins over any other copy.
    Path(site, "_deps_from_test_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR", "VIRTUAL_ENV")}
    return {
        **env,
        **PLACEHOLDERS,
        "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


def _mf(venv: Path, cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        [str(venv / "bin" / "modelfactory"), *args],
        cwd=cwd,
        env=_env(venv),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"modelfactory {' '.join(args)} in {cwd}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _sweep_rows(sweep: Path) -> list[dict[str, object]]:
    return [json.loads((job / "result.json").read_text()) for job in sorted(sweep.glob("[0-9]*"))]


def test_the_wheel_installed_in_a_fresh_venv_runs_from_anywhere(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "modelfactory/conf/__init__.py",
        "modelfactory/conf/config.yaml",
        "modelfactory/conf/model/transformers_tiny.yaml",
        "modelfactory/conf/hydra/launcher/slurm.yaml",
        "modelfactory/assets/tiny-llama/config.json",
        "modelfactory/py.typed",
        "modelfactory/eval/data/capitals.jsonl",  # task=capitals' items (pkg://modelfactory.eval/...)
    } <= names
    assert any(n.startswith("modelfactory/assets/tiny-llama/") and n.endswith(".safetensors") for n in names)
    venv = _venv_with(wheel, tmp_path)

    empty = tmp_path / "empty"
    empty.mkdir()
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import modelfactory; print(modelfactory.__file__)"],
        cwd=empty,
        env=_env(venv),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(venv)), where  # the installed wheel, not the checkout

    assert {"openai_gpt4o", "transformers_tiny"} <= set(_mf(venv, empty, "list").split())
    assert "0 problem(s)" in _mf(venv, empty, "check")
    # A single run, then a sweep. The tiny model is loaded once, in the sweep's job: torch + transformers
    # cost ~8 s of a ~10 s process here, and that job shows the shipped weights load from the installed
    # wheel in a process of the launcher's own (what a second load in the single run showed too); the
    # single run shows run mode and a CLI override from an empty directory, which need no torch.
    _mf(venv, empty, "run", "model=custom_callable", "prompt=Hi", f"hydra.run.dir={tmp_path / 'one'}")
    one = json.loads((tmp_path / "one" / "result.json").read_text())
    assert one["error"] is None and one["content"].startswith("Echo: Hi")
    # A sweep under a launcher that pickles the task function into job processes of its own.
    sweep = tmp_path / "sweep"
    out = _mf(
        venv,
        empty,
        "run",
        "-m",
        "model=transformers_tiny,custom_callable",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={sweep}",
    )
    assert "Sweep summary" in out
    rows = _sweep_rows(sweep)
    assert [r["error"] for r in rows] == [None, None]
    assert rows[0]["model_name"] == "transformers_tiny"  # job 0: the one tiny-model load of this test

    project = tmp_path / "project"
    (project / "conf" / "model").mkdir(parents=True)
    (project / "conf" / "model" / "mine.yaml").write_text(
        "_target_: modelfactory.CallableModel\nfn: mymod.reply\n"
    )
    (project / "mymod.py").write_text(
        "def reply(messages, **kwargs):\n    return 'mine says hi'\n\n\n"
        "def every_capital(messages, **kwargs):\n"  # names every target: scores 1 on each item
        "    import json\n    from modelfactory.eval.tasks import CAPITALS_FILE\n"
        "    rows = [json.loads(line) for line in CAPITALS_FILE.read_text().splitlines()]\n"
        "    return ', '.join(str(r['target']) for r in rows)\n"
    )
    listed = set(_mf(venv, project, "list").split())
    assert {"mine", "openai_gpt4o", "transformers_tiny"} <= listed
    assert "0 problem(s)" in _mf(venv, project, "check")
    assert (
        _mf(venv, project, "run", "model=mine", f"hydra.run.dir={tmp_path / 'mine'}").strip()
        == "mine says hi"
    )
    sweep = tmp_path / "sweep_mine"
    _mf(venv, project, "run", "-m", "model=mine,custom_callable", f"hydra.sweep.dir={sweep}")  # theirs, ours
    rows = _sweep_rows(sweep)
    assert [r["error"] for r in rows] == [None, None]
    assert rows[0]["content"] == "mine says hi" and rows[1]["content"].startswith("Echo: ")
    # task=capitals reads its items from the installed package, not from a clone: scored in the run
    capitals = tmp_path / "capitals"
    out = _mf(venv, project, "run", "model=custom_callable", "model.fn=mymod.every_capital",
              "task=capitals", "task.limit=3", f"hydra.run.dir={capitals}")  # fmt: skip
    assert "includes: 1.000" in out
    job = json.loads((capitals / "job.json").read_text())
    assert job["primary"] == {"scorer": "includes", "value": 1.0} and job["scores"]["includes"]["n"] == 3
