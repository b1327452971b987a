"""``modelfactory serve`` in front of a config as the model of the evaluation tools people already run
(issue 25 item 8, issue 23's serve done-when): Inspect AI's ``openai-api/<service>/<model>`` provider and
lm-eval's ``local-chat-completions`` and ``local-completions`` (a loglikelihood task), each running a
tiny local-file task end to end against the real ``modelfactory serve`` CLI.

The clients run in their own processes with the Python that has them: this one when ``inspect_ai`` and
``lm_eval`` import here (the ``dev`` extra), else ``$MODELFACTORY_EVAL_PYTHON`` (a venv beside this one,
for a machine where installing them here would move other packages' versions: inspect-ai 0.3.285 pins
``fsspec<=2026.6.0`` and, through s3fs, an older botocore). What they got is checked against the served
model's own answers, computed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("torch")

from modelfactory.backends.transformers import TransformersModel  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-serve-eval-0123456789abcdef"
NAME = "tiny"
QUESTIONS = [
    {"question": "What is the capital of France?", "answer": "Paris"},
    {"question": "What do bees make?", "answer": "honey"},
    {"question": "Count to three.", "answer": "one"},
]
CHOICES = [
    {"question": "The capital of France is", "choices": [" Paris", " Rome", " a fish"], "label": 0},
    {"question": "Bees make", "choices": [" honey", " cars"], "label": 0},
]


def eval_python() -> str:
    """The Python that runs Inspect AI and lm-eval (see the module docstring), or a skip saying how."""
    for python in (sys.executable, os.environ.get("MODELFACTORY_EVAL_PYTHON")):
        if (
            python
            and subprocess.run([python, "-c", "import inspect_ai, lm_eval"], capture_output=True).returncode
            == 0
        ):
            return python
    pytest.skip(
        "inspect-ai and lm-eval are not installed: pip install 'modelfactory[dev]', or point "
        "MODELFACTORY_EVAL_PYTHON at a Python that has inspect-ai==0.3.285 and lm-eval==0.4.13"
    )


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "modelfactory"
    return [str(script)] if script.exists() else [sys.executable, "-m", "modelfactory.cli"]


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    """``modelfactory serve model=transformers_tiny``, the real CLI; its ``/v1`` base URL."""
    env = {**os.environ, "MODELFACTORY_SERVER_API_KEY": KEY, "HF_HUB_OFFLINE": "1"}
    cmd = [
        *_console_script(),
        "serve",
        "model=transformers_tiny",
        "server.port=0",
        "server.log_level=warning",
        "model.dtype=float32",
        f"server.model_name={NAME}",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert " on http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.poll() is not None else "")
        yield line.split(" on ", 1)[1].split()[0]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def tiny() -> TransformersModel:
    return TransformersModel(model_id="builtin:tiny-llama", dtype="float32").load()


def served_reply(api_base: str, question: str, max_tokens: int) -> str:
    body = {
        "model": NAME,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    resp = httpx.post(
        f"{api_base}/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=60
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])


def run_client(args: list[str], tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "INSPECT_LOG_DIR": str(tmp_path / "inspect-logs"),
        **env,
    }
    full_env.pop("PYTHONPATH", None)  # the client needs nothing of modelfactory: it speaks HTTP
    done = subprocess.run(
        [eval_python(), *args], cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- Inspect AI


INSPECT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from inspect_ai import Task, eval
    from inspect_ai.dataset import FieldSpec, json_dataset
    from inspect_ai.scorer import includes
    from inspect_ai.solver import generate

    data, stream = sys.argv[1], sys.argv[2] == "stream"
    task = Task(
        dataset=json_dataset(data, FieldSpec(input="question", target="answer")),
        solver=generate(),
        scorer=includes(),
    )
    log = eval(task, model="openai-api/mf/tiny", max_tokens=8, temperature=0, display="none",
               model_args={"stream": stream} if stream else {})[0]
    print(json.dumps({
        "status": log.status,
        "error": str(log.error) if log.error else None,
        "outputs": [s.output.completion for s in log.samples],
        "scores": [s.scores["includes"].value for s in log.samples],
        "usage": {k: v.model_dump() for k, v in log.stats.model_usage.items()},
    }))
    """
)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_inspect_ai_runs_a_task_against_modelfactory_serve(served: str, tmp_path: Path, stream: bool) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", QUESTIONS)
    script = tmp_path / "run_inspect.py"
    script.write_text(INSPECT_SCRIPT)
    done = run_client(
        [str(script), str(data), "stream" if stream else "plain"],
        tmp_path,
        {"MF_BASE_URL": served, "MF_API_KEY": KEY},
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "success", result["error"]
    assert result["outputs"] == [served_reply(served, q["question"], 8) for q in QUESTIONS]
    assert all(v in ("C", "I") for v in result["scores"])
    (usage,) = result["usage"].values()
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0


# --------------------------------------------------------------------------- lm-eval


def lm_eval_task(tmp_path: Path, name: str, body: str) -> Path:
    tasks = tmp_path / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / f"{name}.yaml").write_text(f"task: {name}\n" + textwrap.dedent(body))
    return tasks


def lm_eval_samples(out: Path, task: str) -> list[dict[str, Any]]:
    (path,) = out.rglob(f"samples_{task}_*.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["doc_id"])


def test_lm_eval_local_chat_completions_runs_a_generation_task(served: str, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", QUESTIONS)
    tasks = lm_eval_task(
        tmp_path,
        "mf_qa",
        f"""\
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data}
        test_split: test
        output_type: generate_until
        doc_to_text: "{{{{question}}}}"
        doc_to_target: "{{{{answer}}}}"
        generation_kwargs:
          until: []
          max_gen_toks: 8
          temperature: 0
        metric_list:
          - metric: exact_match
        """,
    )
    out = tmp_path / "out"
    args = f"model={NAME},base_url={served}/chat/completions,num_concurrent=3,max_retries=1,tokenized_requests=False"
    run_client(
        [
            "-m",
            "lm_eval",
            "--model",
            "local-chat-completions",
            "--model_args",
            args,
            "--tasks",
            "mf_qa",
            "--include_path",
            str(tasks),
            "--apply_chat_template",
            "--output_path",
            str(out),
            "--log_samples",
        ],
        tmp_path,
        {"OPENAI_API_KEY": KEY},
    )
    samples = lm_eval_samples(out, "mf_qa")
    assert [s["resps"][0][0] for s in samples] == [served_reply(served, q["question"], 8) for q in QUESTIONS]


def continuation_logprob(tiny: TransformersModel, context: str, continuation: str) -> float:
    """log P(continuation | context) under the model, split into tokens as lm-eval splits them."""
    tok = tiny.tokenizer
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    rt = tiny.runtime
    torch = rt.torch
    with torch.inference_mode():
        lsm = torch.log_softmax(rt.model(torch.tensor([whole])).logits[0].float(), dim=-1)
    return sum(float(lsm[j - 1, whole[j]]) for j in range(len(ctx), len(whole)))


def test_lm_eval_local_completions_runs_a_loglikelihood_task(
    served: str, tmp_path: Path, tiny: TransformersModel
) -> None:
    data = write_jsonl(tmp_path / "mc.jsonl", CHOICES)
    tasks = lm_eval_task(
        tmp_path,
        "mf_mc",
        f"""\
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data}
        test_split: test
        output_type: multiple_choice
        doc_to_text: "{{{{question}}}}"
        doc_to_choice: "{{{{choices}}}}"
        doc_to_target: "{{{{label}}}}"
        target_delimiter: ""
        metric_list:
          - metric: acc
        """,
    )
    out = tmp_path / "out"
    tokenizer = ROOT / "modelfactory" / "assets" / "tiny-llama"
    args = (
        f"model={NAME},base_url={served}/completions,num_concurrent=1,max_retries=1,"
        f"tokenizer_backend=huggingface,tokenizer={tokenizer},tokenized_requests=True"
    )
    run_client(
        [
            "-m",
            "lm_eval",
            "--model",
            "local-completions",
            "--model_args",
            args,
            "--tasks",
            "mf_mc",
            "--include_path",
            str(tasks),
            "--output_path",
            str(out),
            "--log_samples",
        ],
        tmp_path,
        {"OPENAI_API_KEY": KEY},
    )
    samples = lm_eval_samples(out, "mf_mc")
    assert len(samples) == len(CHOICES)
    for sample, row in zip(samples, CHOICES, strict=True):
        got = [float(r[0][0]) for r in sample["resps"]]  # the samples file writes them as strings
        expected = [continuation_logprob(tiny, row["question"], c) for c in row["choices"]]
        assert got == pytest.approx(expected, abs=1e-3)
