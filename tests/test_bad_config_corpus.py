"""The bad-input corpus of the app (issue 16, items 6-8): every bad override gets a clear message naming
the key and the documented exit code (2 for a config error, Hydra's own included; 130 for Ctrl-C), never a
traceback, never a silent success. Listed overrides first, then hypothesis-generated ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig

from modelfactory.job import app

ROOT = Path(__file__).resolve().parents[1]
ECHO = "model=custom_callable"  # examples.custom_model: "Echo: <prompt>\nObservation: done. END"


def config(*overrides: str) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "modelfactory" / "conf")):
        return compose(config_name="config", overrides=list(overrides))


def job(path: Path) -> dict:
    return json.loads((path / "job.json").read_text(encoding="utf-8"))


# Each bad override and the key its error must name.
BAD = [
    (["stop_sequences=5"], "stop_sequences"),
    (["stop_sequences=[null]"], "stop_sequences"),
    (["stop_sequences=[END,'']"], "stop_sequences"),
    (["prompt=null"], "prompt"),
    (["task=dataset", "task.limit=-1"], "task.limit"),
    (["task=dataset", "task.limit=abc"], "task.limit"),
    (["output.results_file=null"], "output.results_file"),
    (["output.result_file=null"], "output.result_file"),
    (["output=null"], "output"),
    (["runner.concurrency=abc"], "runner.concurrency"),
    (["runner.local_batch_size=0"], "runner.local_batch_size"),
    (["generation.temperature=hot"], "generation.temperature"),
    (["generation.temperature=-1"], "generation.temperature"),
    (["generation.max_tokens=[1,2]"], "generation.max_tokens"),
    (["generation.seed=abc"], "generation.seed"),
    (["generation.seed=1180591620717411303424"], "generation.seed"),  # 2**70
    (["generation.top_p=0"], "generation.top_p"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_override_is_a_config_error_naming_the_key(
    overrides: list[str], key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert app.run_job(config(ECHO, *overrides), tmp_path) == 2
    err = capsys.readouterr().err
    assert f"{key}:" in err and "Traceback" not in err
    recorded = job(tmp_path)["error"]
    assert recorded["type"] == "ConfigError" and f"{key}:" in recorded["message"]
    assert not (tmp_path / "results.jsonl").exists()  # nothing ran


def test_a_string_is_one_stop_sequence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert app.run_job(config(ECHO, "prompt=hi", "stop_sequences=END"), tmp_path) == 0
    reply = json.loads((tmp_path / "result.json").read_text())
    assert reply["stop_sequences"] == ["END"]
    assert reply["content"] == "Echo: hi\nObservation: done. "  # not cut at the first "E", "N" or "D"


@pytest.mark.parametrize("overrides", [["generation=null"], ["~generation"]])
def test_no_generation_section_means_no_per_call_parameters(overrides: list[str], tmp_path: Path) -> None:
    assert app.run_job(config(ECHO, "prompt=hi", *overrides), tmp_path) == 0
    assert job(tmp_path)["error"] is None


# --------------------------------------------------------------------------- through run.py (Hydra's errors)


def run_py(tmp_path: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen(
        [sys.executable, "run.py", f"hydra.run.dir={tmp_path / 'run'}", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,  # type: ignore[call-overload]
    )


HYDRA_BAD = [
    (["model=null"], "model"),
    (["task=null"], "task"),
    (["foo=bar"], "foo"),
    (["generation.temperature=[1"], "[1"),
    (["runner.concurrency=abc"], "runner.concurrency"),
    (["hydra.run.dir=/etc/hostname/run"], "hydra.run.dir"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "named"), HYDRA_BAD, ids=[" ".join(o) for o, _ in HYDRA_BAD])
def test_run_py_config_errors_exit_2_without_a_traceback(
    overrides: list[str], named: str, tmp_path: Path
) -> None:
    proc = run_py(tmp_path, ECHO, *overrides)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "Traceback" not in err and 'File "' not in err
    assert err.startswith("error:") and named in err


@pytest.mark.slow
def test_ctrl_c_writes_job_json_and_exits_130(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"p{i}"}) + "\n" for i in range(200)))
    proc = run_py(
        tmp_path,
        ECHO,
        "model.fn=tests.slow_model.slow_echo",
        "task=dataset",
        f"task.path={items}",
        "runner.concurrency=2",
        "runner.progress=false",
    )
    rows = tmp_path / "run" / "results.jsonl"
    deadline = time.monotonic() + 120
    while not (rows.exists() and rows.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("interrupted")
    recorded = job(tmp_path / "run")
    assert recorded["interrupted"] is True and recorded["error"]["type"] == "KeyboardInterrupt"
    written = len(rows.read_text().splitlines())
    assert 2 <= written < 200 and f"{written} rows" in recorded["error"]["message"]


# --------------------------------------------------------------------------- hypothesis

KEYS = [
    "generation.temperature",
    "generation.max_tokens",
    "generation.seed",
    "generation.top_p",
    "runner.concurrency",
    "runner.local_batch_size",
    "stop_sequences",
    "prompt",
    "output.results_file",
]
word = st.text(alphabet="abcEND_-. ", min_size=1, max_size=6)
literal = st.one_of(
    st.just("null"),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr).map(lambda s: s.replace("inf", "inf")),
    word.map(lambda w: f"'{w}'"),
    st.lists(
        st.one_of(st.integers(-3, 3).map(str), word.map(lambda w: f"'{w}'"), st.just("null")), max_size=3
    ).map(lambda xs: "[" + ",".join(xs) + "]"),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=literal)
def test_fuzzed_overrides_run_or_fail_clearly(
    key: str, value: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    try:
        cfg = config(ECHO, "prompt=hi", "runner.progress=false", f"{key}={value}")
    except (HydraException, ValueError):
        return  # Hydra's own parse errors: exit 2 through run.py (test_run_py_config_errors_exit_2...)
    out = tmp_path_factory.mktemp("fuzz")
    code = app.run_job(cfg, out)
    recorded = job(out)
    if code == 2:
        assert recorded["error"]["type"] == "ConfigError" and f"{key}:" in recorded["error"]["message"]
    else:
        assert code == 0 and recorded["error"] is None, recorded
