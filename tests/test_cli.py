"""``modelfactory list`` / ``check`` on the shipped configs: composed by Hydra, validated, no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfactory.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {
    "transformers_tiny",
    "transformers_smollm",
    "transformers_smollm2",
    "hf_api",
    "litellm_claude",
    "openai_gpt4o",
    "azure_openai",
    "custom_callable",
    "local_server",
    "gpu_server",  # the per-job vLLM / llama.cpp server of the SLURM GPU recipes
    "llamacpp_smollm2",
    "bedrock_nova",
    "litellm_router",
    "vllm_qwen",  # Linux + CUDA GPU only
    "mlx_smollm2",  # macOS on Apple silicon only
    "openai_responses",  # OpenAI's Responses API (issue 26)
    "openvino_smollm2",
}
# configs whose backend runs on one platform only: `check` reports them elsewhere, naming the platform
PLATFORM_BOUND = {"vllm_qwen": "Linux with a CUDA GPU", "mlx_smollm2": "macOS on Apple silicon"}


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_list_shows_the_eight_design_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    assert set(capsys.readouterr().out.split()) == SHIPPED | {"fallback_example"}


def test_check_passes_on_shipped_configs_with_placeholder_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var, value in {
        "OPENAI_API_KEY": "placeholder",
        "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com",
        "AZURE_OPENAI_API_KEY": "placeholder",
        "OPENAI_API_VERSION": "2024-10-21",
        "AZURE_OPENAI_MODEL": "gpt-4o",
        "HF_TOKEN": "placeholder",
        "ANTHROPIC_API_KEY": "placeholder",
    }.items():
        monkeypatch.setenv(var, value)
    code = main(["check"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert not [line for line in out.splitlines() if line.startswith("conf/model/")], out
    assert f"0 problem(s) in {len(SHIPPED) + 1} configs" in out  # + fallback_example
    # a config for another platform is a warning among all the others (this machine is neither) ...
    for name, platform in PLATFORM_BOUND.items():
        assert any(
            line.startswith(f"warning: conf/model/{name}.yaml") and platform in line
            for line in out.splitlines()
        ), out
    # ... and a problem when it is the one named
    assert main(["check", "model=mlx_smollm2"]) == 1
    assert "conf/model/mlx_smollm2.yaml: _target_: MLXModel runs on macOS" in capsys.readouterr().out


def test_check_reports_every_problem_with_file_and_fix(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "model=azure_openai", "model.max_tokens=0"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.count("conf/model/azure_openai.yaml") == 5
    for text in ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "OPENAI_API_VERSION", "max_tokens"):
        assert text in out


def test_check_bad_override_is_a_problem_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "model=openai_gpt4o", "model.no_such_key=1"]) == 1
    assert "no_such_key" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("config", "backend", "says"),
    [
        ("llamacpp_smollm2", "LlamaCppModel", "one conversation at a time on a CPU"),
        ("transformers_smollm2", "TransformersModel", "batched work"),
        ("transformers_tiny", "TransformersModel", "batched work"),
        ("openvino_smollm2", "OpenVINOModel", "datasets and many clients on a CPU"),
    ],
)
def test_check_says_which_local_backend_suits_which_job(
    capsys: pytest.CaptureFixture[str], config: str, backend: str, says: str
) -> None:
    """Checking a local model's config answers "transformers or llama.cpp?" in one line, pointing at the
    other backend for the other jobs (README: Which local backend for which job)."""
    main(
        ["check", f"model={config}"]
    )  # passes or not depending on installed extras: the note is printed either way
    notes = [line for line in capsys.readouterr().out.splitlines() if "local backend for" in line]
    other = "TransformersModel" if backend == "LlamaCppModel" else "LlamaCppModel"
    assert len(notes) == 1, notes
    assert notes[0].startswith(f"note: conf/model/{config}.yaml: {backend} is the local backend for {says}")
    assert other in notes[0] and "Which local backend for which job" in notes[0]


def test_check_gives_no_backend_hint_for_an_api_model(capsys: pytest.CaptureFixture[str]) -> None:
    main(["check", "model=openai_gpt4o"])
    assert "local backend" not in capsys.readouterr().out


def test_check_and_estimate_read_dot_env_as_run_py_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key kept in ./.env (and not in the environment) is seen by every entry point, not only run.py."""
    monkeypatch.setenv("OPENAI_API_KEY", "placeholder")  # recorded first: teardown restores the original
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-from-dot-env-123456\n")
    conf: list[str] = []  # the shipped configs (package data); tmp_path has no ./conf
    assert main([*conf, "check", "model=openai_gpt4o"]) == 0, capsys.readouterr().out
    assert "OPENAI_API_KEY" not in capsys.readouterr().out
    monkeypatch.delenv("OPENAI_API_KEY")  # loaded by check: unset it for estimate's turn
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "a", "prompt": "hello there"}\n')
    args = [*conf, "estimate", "model=openai_gpt4o", "task=dataset", f"task.path={items}"]
    assert main(args) == 0, capsys.readouterr().err
    assert "items:          1" in capsys.readouterr().out
