"""``modelfactory run``: the app inside the package. Its help says what it does, tab completion completes
the console script's overrides in a real bash, its task function is importable by name (what submitit
pickles), and ``python run.py`` is the same app."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelfactory import _hydra_app as hydra_app

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "COMP_LINE", "COMP_POINT")}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's modelfactory, wherever the command runs
    return env


def _modelfactory(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelfactory.cli", *args],
        cwd=cwd,
        env={**_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _user_project(tmp_path: Path) -> Path:
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mine.yaml").write_text(
        "_target_: modelfactory.CallableModel\nfn: mymod.reply\n"
    )
    (tmp_path / "mymod.py").write_text("def reply(messages, **kwargs):\n    return 'mine says hi'\n")
    return tmp_path


def test_help_says_what_the_app_does_with_examples_and_the_groups(tmp_path: Path) -> None:
    proc = _modelfactory(_user_project(tmp_path), "run", "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "powered by Hydra" not in out
    assert out.startswith("modelfactory run [overrides]: run one job")
    assert "modelfactory run -m model=" in out  # examples
    groups = out.split("== Config groups (group=option) ==", 1)[1].split("==", 1)[0]
    model_line = next(line for line in groups.splitlines() if line.startswith("model: "))
    assert {"mine", "openai_gpt4o", "transformers_tiny"} <= set(model_line[7:].split(", "))  # both dirs
    assert any(line.startswith("task: ") for line in groups.splitlines())
    assert 'eval "$(modelfactory run -sc install=bash)"' in out  # Hydra's flags, with our program's name


def test_the_completion_script_calls_the_console_scripts_run(tmp_path: Path) -> None:
    script = hydra_app.completion_script()
    assert "modelfactory run -sc query=bash" in script
    assert script.rstrip().endswith("-F _modelfactory_completion modelfactory")
    assert "python" not in script
    fish = _modelfactory(tmp_path, "run", "-sc", "install=fish")  # Hydra's would complete `modelfactory`
    assert fish.returncode == 2 and "bash and zsh" in fish.stderr and not fish.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_tab_completion_of_the_console_script_in_a_real_bash(tmp_path: Path) -> None:
    """``eval "$(modelfactory run -sc install=bash)"``, then what bash offers after ``modelfactory run
    model=transformers_t`` and after ``modelfactory li``; ``modelfactory`` is a script on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "modelfactory"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} -m modelfactory.cli "$@"\n')
    exe.chmod(0o755)
    probe = (
        'eval "$(modelfactory run -sc install=bash)"\n'
        "complete -p modelfactory\n"
        'for line in "modelfactory run model=transformers_t" "modelfactory li"; do\n'
        '  COMP_LINE="$line"; COMP_POINT=${#line}; words=($line); COMP_CWORD=$((${#words[@]} - 1))\n'
        '  _modelfactory_completion; echo "REPLY: ${COMPREPLY[*]}"\n'
        "done\n"
    )
    proc = subprocess.run(
        ["bash", "-c", probe],
        cwd=tmp_path,
        env={**_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "-F _modelfactory_completion modelfactory" in lines[0]
    replies = [line.removeprefix("REPLY: ") for line in lines if line.startswith("REPLY: ")]
    assert replies == ["model=transformers_tiny", "list"]


def test_the_task_function_is_importable_by_name() -> None:
    """Hydra hands the launcher the function under ``hydra.main``; submitit pickles it. By reference
    (its module and name), so the job process imports it from the installed package."""
    task = hydra_app.main.__wrapped__  # type: ignore[attr-defined]
    assert task.__module__ == "modelfactory._hydra_app"
    assert pickle.loads(pickle.dumps(task)) is task
    assert b"modelfactory._hydra_app" in pickle.dumps(task)
    assert pickle.loads(pickle.dumps(hydra_app.run_task)) is hydra_app.run_task


FREEZE_PROBE = """
import atexit, gc, sys
from pathlib import Path

out = Path(sys.argv[1])
# registered first, so it runs after every atexit hook registered later (the app's own)
atexit.register(lambda: print("at exit:", gc.get_freeze_count() > 0, (out / "job.json").is_file()))
from modelfactory import _hydra_app

sys.argv = ["run.py", "model=custom_callable", f"hydra.run.dir={out}"]
_hydra_app.main()  # the task function under Hydra, as a launcher's worker runs it (not run_cli)
print("after the job:", gc.get_freeze_count() > 0)
"""


def test_a_process_that_ran_a_job_skips_the_collections_at_exit(tmp_path: Path) -> None:
    """CPython's collections at exit cost a process that imported MLflow 0.7-2 s after everything was
    written: the job's process freezes the collector at exit (and only then), every atexit hook still runs."""
    proc = subprocess.run(
        [sys.executable, "-c", FREEZE_PROBE, str(tmp_path / "run")],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == ["after the job: False", "at exit: True True"], proc.stdout


def test_run_and_run_py_are_the_same_app_with_the_users_configs(tmp_path: Path) -> None:
    project = _user_project(tmp_path)
    proc = _modelfactory(project, "run", "model=mine", f"hydra.run.dir={tmp_path / 'a'}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "mine says hi"
    assert json.loads((tmp_path / "a" / "result.json").read_text())["content"] == "mine says hi"
    assert (tmp_path / "a" / "run.log").is_file()  # the job log keeps its name (hydra.job.name)
    shim = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "model=mine", f"hydra.run.dir={tmp_path / 'b'}"],
        cwd=project,
        env={k: v for k, v in _env().items() if k != "PYTHONPATH"},  # run.py finds its own package
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shim.returncode == 0, shim.stderr
    assert shim.stdout.strip() == "mine says hi"


def test_an_explicit_config_dir_is_searched_before_ours(tmp_path: Path) -> None:
    """``--config-dir`` before ``run`` (modelfactory's flag) or after it (Hydra's): the same search path."""
    conf = _user_project(tmp_path / "elsewhere") / "conf"
    shutil.copy(tmp_path / "elsewhere" / "mymod.py", tmp_path)  # importable from where it runs
    for n, args in enumerate(
        (["--config-dir", str(conf), "run"], ["run", f"--config-dir={conf}"], ["run", "-cd", str(conf)])
    ):
        proc = _modelfactory(tmp_path, *args, "model=mine", f"hydra.run.dir={tmp_path / str(n)}")
        assert proc.returncode == 0, (args, proc.stderr)
        assert proc.stdout.strip() == "mine says hi"


def test_a_dotenv_is_loaded_by_every_command(tmp_path: Path) -> None:
    """check (in-process validation) and run (the job) see a key that only ./.env holds."""
    (tmp_path / ".env").write_text("OPENAI_API_KEY=from-dotenv\n")
    env = {k: v for k, v in _env().items() if k != "OPENAI_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "modelfactory.cli", "check", "model=openai_gpt4o"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "from-dotenv" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "primary, code, expected",
    [
        ({"scorer": "includes", "value": 0.25}, 0, 0.25),
        ({"scorer": "includes", "value": 1}, 0, 1.0),
        ({"scorer": "includes", "value": 0.25}, 1, None),  # an item failed: not a trial to learn from
        ({"scorer": "includes", "value": 0.25}, 3, None),  # stopped at its budget: a mean over a subset
        ({"scorer": "includes", "value": None}, 0, None),  # nothing scored
        ({"scorer": "includes", "value": float("nan")}, 0, None),  # NaN would crash the Optuna study
        (None, 0, None),  # a task without scorers
    ],
)
def test_a_multirun_job_returns_its_primary_score_or_none(
    tmp_path: Path, primary: object, code: int, expected: float | None
) -> None:
    from modelfactory._hydra_app import primary_score

    (tmp_path / "job.json").write_text(json.dumps({"primary": primary} if primary else {"items": 1}))
    got = primary_score(tmp_path, code)
    assert got == expected and (got is None or isinstance(got, float))
    assert primary_score(tmp_path / "missing", 0) is None  # no record: the job did not finish
