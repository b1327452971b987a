"""TransformersModel on the shipped ``builtin:tiny-llama`` (offline, CPU, milliseconds per call).

A tiny model decodes greedily into one repeated token, so the stop-sequence tests use seeded sampling:
the same seed gives the same tokens, so a stopped run is the unstopped run cut short.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelfactory.errors import (
    BackendError,
    ConfigError,
    MessageError,
    MissingDependencyError,
    UnsupportedFeatureError,
)

pytest.importorskip("torch")
pytest.importorskip("transformers")

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from modelfactory.backends.transformers import ASSETS, TransformersModel, stop_state  # noqa: E402
from modelfactory.messages import trim_at_stop  # noqa: E402
from tests.procs import run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Tell me a story about the river."},
]
MAX_NEW = 24


@pytest.fixture(scope="module")
def tiny() -> TransformersModel:
    """One loaded model for the module: seeded sampling, so every call with the same seed repeats."""
    model = TransformersModel(model_id="builtin:tiny-llama", max_new_tokens=MAX_NEW, temperature=0.8, seed=0)
    _ = model.runtime
    return model


@pytest.fixture(scope="module")
def unstopped(tiny: TransformersModel) -> Any:
    return tiny(MESSAGES)


def _token_pieces(model: TransformersModel, ids: list[int]) -> list[str]:
    return [model.tokenizer.decode([i], skip_special_tokens=True) for i in ids]


# --------------------------------------------------------------------------- assets and template


def test_asset_dir_is_small_and_complete() -> None:
    root = ASSETS / "tiny-llama"
    names = {p.name for p in root.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    assert sum(p.stat().st_size for p in root.iterdir()) < 1_000_000
    config = json.loads((root / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True


def test_chat_template_builds_chatml_prompt(tiny: TransformersModel) -> None:
    prompt = tiny.chat_prompt(MESSAGES)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nTell me a story about the river.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    tok = tiny.tokenizer
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    # the markers are single special tokens, not spelled out byte by byte
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3
    assert ids.count(tok.convert_tokens_to_ids("<|im_end|>")) == 2


def test_chat_template_override() -> None:
    model = TransformersModel(
        model_id="builtin:tiny-llama",
        chat_template="{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}>>> ",
        max_new_tokens=2,
    )
    assert model.chat_prompt([{"role": "user", "content": "hi"}]) == "[user] hi\n>>> "
    assert model([{"role": "user", "content": "hi"}]).raw["prompt"] == "[user] hi\n>>> "


# --------------------------------------------------------------------------- plain calls


def test_call_returns_text_and_exact_usage(tiny: TransformersModel, unstopped: Any) -> None:
    reply = unstopped
    assert isinstance(reply.content, str) and reply.content.strip()
    prompt = tiny.chat_prompt(MESSAGES)
    assert reply.raw["prompt"] == prompt
    prompt_len = len(tiny.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    usage = reply.token_usage
    assert usage.input_tokens == prompt_len
    assert usage.output_tokens == len(reply.raw["generated_token_ids"]) <= MAX_NEW
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert reply.content == tiny.tokenizer.decode(reply.raw["generated_token_ids"], skip_special_tokens=True)


def test_same_seed_same_text_other_seed_other_text(tiny: TransformersModel, unstopped: Any) -> None:
    assert tiny(MESSAGES).content == unstopped.content
    assert any(tiny(MESSAGES, seed=s).content != unstopped.content for s in range(1, 6))


def test_max_tokens_overrides_max_new_tokens(tiny: TransformersModel) -> None:
    reply = tiny(MESSAGES, max_tokens=5)
    assert reply.token_usage.output_tokens <= 5
    eos = tiny.tokenizer.eos_token_id
    assert reply.raw["finish_reason"] == "length" or reply.raw["generated_token_ids"][-1] == eos


def test_temperature_zero_is_greedy_and_ignores_seed(tiny: TransformersModel) -> None:
    a = tiny(MESSAGES, temperature=0, seed=1)
    b = tiny(MESSAGES, temperature=0, seed=2)
    assert a.content == b.content


def test_images_are_refused(tiny: TransformersModel) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        }
    ]
    with pytest.raises(UnsupportedFeatureError, match="text only"):
        tiny(messages)


def test_text_parts_are_joined(tiny: TransformersModel) -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert tiny(parts, max_tokens=1).raw["prompt"].startswith("<|im_start|>user\na\nb<|im_end|>")


# --------------------------------------------------------------------------- stop sequences


def test_stop_spanning_tokens_stops_generation_early(tiny: TransformersModel, unstopped: Any) -> None:
    ids = unstopped.raw["generated_token_ids"]
    pieces = _token_pieces(tiny, ids)
    assert "".join(pieces) == unstopped.content
    # a stop made of the end of one token and the start of the next, early in the output
    i = next(k for k in range(1, len(pieces) - 2) if len(pieces[k]) >= 2 and len(pieces[k + 1]) >= 2)
    stop = pieces[i][-2:] + pieces[i + 1][:2]
    reply = tiny(MESSAGES, stop_sequences=[stop])
    cut = unstopped.content.index(stop)
    assert reply.content == unstopped.content[:cut]
    assert stop not in reply.content
    assert reply.raw["stop_sequence"] == stop and reply.raw["finish_reason"] == "stop"
    assert reply.token_usage.output_tokens < unstopped.token_usage.output_tokens
    # it stopped on the token that completed the stop, not later
    done = len("".join(pieces[: reply.token_usage.output_tokens]))
    assert done >= cut + len(stop) > len("".join(pieces[: reply.token_usage.output_tokens - 1]))


def test_stop_only_in_prompt_does_not_stop(tiny: TransformersModel, unstopped: Any) -> None:
    first = unstopped.content[:2]
    for stop in ("Tell me a story", "helpful", "assistant\n" + first):
        assert stop in tiny.chat_prompt(MESSAGES) + first and stop not in unstopped.content
        reply = tiny(MESSAGES, stop_sequences=[stop])
        assert reply.content == unstopped.content
        assert reply.token_usage.output_tokens == unstopped.token_usage.output_tokens


def test_supports_stop_false_trims_afterwards(unstopped: Any) -> None:
    model = TransformersModel(
        model_id="builtin:tiny-llama", max_new_tokens=MAX_NEW, temperature=0.8, seed=0, supports_stop=False
    )
    stop = unstopped.content[6:9]
    reply = model(MESSAGES, stop_sequences=[stop])
    assert reply.content == unstopped.content[: unstopped.content.index(stop)]
    assert reply.token_usage.output_tokens == unstopped.token_usage.output_tokens
    assert reply.raw["stop_sequence"] is None


def test_stop_state_waits_for_an_overlapping_stop_that_starts_earlier() -> None:
    stops = ["t", " town "]
    assert stop_state("The small town", stops) == (len("The small"), False)  # " town " may follow
    assert stop_state("The small town sat", stops) == (len("The small"), True)
    assert stop_state("The small towns", stops) == (len("The small "), True)
    assert stop_state("The small", stops) == (len("The small"), False)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="ab ", max_size=16),
    stops=st.lists(st.text(alphabet="ab ", min_size=1, max_size=4), min_size=1, max_size=3),
)
def test_stop_state_never_settles_text_that_a_later_token_changes(text: str, stops: list[str]) -> None:
    reply = trim_at_stop(text, stops)
    for end in range(len(text) + 1):
        n, final = stop_state(text[:end], stops)
        assert reply == text[:n] if final else reply.startswith(text[:n])


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_stop_contract_property(tiny: TransformersModel, unstopped: Any, data: st.DataObject) -> None:
    text = unstopped.content
    substrings = st.tuples(st.integers(0, len(text) - 1), st.integers(1, 6)).map(
        lambda t: text[t[0] : t[0] + t[1]]
    )
    stops = data.draw(
        st.lists(st.one_of(substrings, st.sampled_from(sorted(set(text)))), min_size=1, max_size=3)
    )
    assume(all(stops))
    stream = data.draw(st.booleans())
    if stream:
        deltas = list(tiny.generate_stream(MESSAGES, stop_sequences=stops))
        content = "".join(d.content or "" for d in deltas)
        assert all(not any(s in (d.content or "") for s in stops) for d in deltas)
    else:
        content = tiny(MESSAGES, stop_sequences=stops).content
    assert not any(s in content for s in stops)
    # same seed, same tokens: the stopped reply is the unstopped one cut at its first stop
    cut = min(text.index(s) for s in stops)
    assert content == text[:cut]


# --------------------------------------------------------------------------- streaming


def test_stream_matches_call_and_ends_with_usage(tiny: TransformersModel, unstopped: Any) -> None:
    deltas = list(tiny.generate_stream(MESSAGES))
    assert len([d for d in deltas if d.content]) > 1  # token by token, not one blob
    assert "".join(d.content or "" for d in deltas) == unstopped.content
    assert deltas[-1].token_usage == unstopped.token_usage
    assert all(d.token_usage is None for d in deltas[:-1])


def test_every_delta_content_is_a_string(tiny: TransformersModel, unstopped: Any) -> None:
    """smolagents' own tests do `text += delta.content` on every delta, the usage one included (issue 23,
    item 9): it was None there."""
    text = ""
    deltas = list(tiny.generate_stream(MESSAGES))
    for delta in deltas:
        text += delta.content
    assert text == unstopped.content
    assert deltas[-1].token_usage is not None and deltas[-1].content == ""


def test_stream_with_stop(tiny: TransformersModel, unstopped: Any) -> None:
    stop = unstopped.content[8:12]
    reply = tiny(MESSAGES, stop_sequences=[stop])
    deltas = list(tiny.generate_stream(MESSAGES, stop_sequences=[stop]))
    assert "".join(d.content or "" for d in deltas) == reply.content
    assert not any(stop in (d.content or "") for d in deltas)
    assert [d.token_usage for d in deltas if d.token_usage is not None] == [reply.token_usage]


def test_stream_usage_is_last_even_when_text_was_held_back(tiny: TransformersModel, unstopped: Any) -> None:
    stop = unstopped.content[8:12]
    """The base StopFilter holds back 'l' (a possible start of 'l to'); it must come before the usage."""
    assert unstopped.content[7] == stop[0]  # the reply ends with a possible start of the stop
    deltas = list(tiny.generate_stream(MESSAGES, stop_sequences=[stop]))
    assert deltas[-1].token_usage is not None
    assert "".join(d.content or "" for d in deltas) == unstopped.content[:8]


def test_stream_closed_early_frees_the_model(tiny: TransformersModel, unstopped: Any) -> None:
    stream = tiny.generate_stream(MESSAGES, max_tokens=200)
    assert next(stream).content
    stream.close()  # generation thread is cancelled and joined
    assert tiny(MESSAGES).content == unstopped.content


# --------------------------------------------------------------------------- config and errors


def test_import_and_build_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import modelfactory.backends.transformers as t\n"
        "m = t.TransformersModel(model_id='builtin:tiny-llama')\n"
        # nor gguf or accelerate (only a GGUF file's first load needs them): test_transformers_gguf.py blocks
        # them in its own process, after the import, to see a load name the missing one
        "print(sorted(k for k in ('torch', 'transformers', 'gguf', 'accelerate') if k in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_builtin_is_a_config_error_with_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        TransformersModel(model_id="builtin:tiny-lama")
    (problem,) = info.value.problems
    assert problem.key == "model_id"
    assert "did you mean 'builtin:tiny-llama'" in problem.problem


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"device": "gpu"}, "device"),
        ({"dtype": "fp8"}, "dtype"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"model_id": "./no/such/model/dir"}, "model_id"),
        ({"do_sample": False, "temperature": 0.7}, "do_sample"),
        ({"generation_kwargs": {"max_new_tokens": 3}}, "generation_kwargs.max_new_tokens"),
        ({"max_new_token": 3}, "max_new_token"),
    ],
)
def test_bad_config_is_reported(kwargs: dict[str, Any], key: str) -> None:
    kwargs = {"model_id": "builtin:tiny-llama", **kwargs}
    with pytest.raises(ConfigError) as info:
        TransformersModel(**kwargs)
    assert key in [p.key for p in info.value.problems]


def test_offline_missing_hub_model_is_a_clear_backend_error(tmp_path: Path) -> None:
    model = TransformersModel(
        model_id="HuggingFaceTB/SmolLM-135M-Instruct", model_kwargs={"cache_dir": str(tmp_path)}
    )
    with pytest.raises(BackendError) as info:
        model([{"role": "user", "content": "hi"}])
    message = str(info.value)
    assert "HuggingFaceTB/SmolLM-135M-Instruct" in message and "HF_HUB_OFFLINE" in message
    assert "Traceback" not in message and info.value.__cause__ is None


@pytest.mark.slow
def test_offline_missing_hub_model_with_empty_hf_home(tmp_path: Path) -> None:
    """As a user meets it: a fresh process, HF_HUB_OFFLINE=1 and an empty HF_HOME."""
    code = (
        "from modelfactory.backends.transformers import TransformersModel\n"
        "from modelfactory.errors import BackendError\n"
        "m = TransformersModel(model_id='HuggingFaceTB/SmolLM-135M-Instruct')\n"
        "try:\n"
        "    m([{'role': 'user', 'content': 'hi'}])\n"
        "except BackendError as exc:\n"
        "    print('BackendError:', exc)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    env.pop("HF_HUB_CACHE", None)
    out = run_script(code, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("BackendError:")
    assert "HuggingFaceTB/SmolLM-135M-Instruct" in out.stdout and "HF_HUB_OFFLINE" in out.stdout
    assert "Traceback" not in out.stderr


def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    model = TransformersModel(model_id="builtin:tiny-llama")
    with pytest.raises(MissingDependencyError, match=r"modelfactory\[transformers\]"):
        model([{"role": "user", "content": "hi"}])


def test_shipped_configs() -> None:
    from omegaconf import OmegaConf

    from modelfactory.factory import build_model, validate_config

    tiny_cfg = OmegaConf.load(ROOT / "modelfactory" / "conf" / "model" / "transformers_tiny.yaml")
    smol_cfg = OmegaConf.load(ROOT / "modelfactory" / "conf" / "model" / "transformers_smollm.yaml")
    assert validate_config(tiny_cfg) == [] and validate_config(smol_cfg) == []
    model = build_model(tiny_cfg)
    assert isinstance(model, TransformersModel)
    first = model([{"role": "user", "content": "hi"}]).content
    assert first and first == model([{"role": "user", "content": "hi"}]).content  # seeded


# --------------------------------------------------------------------------- batches

QUESTIONS = [
    "What is the capital of France?",
    "Tell me a story.",
    "Hi",
    "How do I make tea? Please explain every step, one by one, from the kettle to the cup.",
    "Count to ten.",
    "What do bees make?",
]
CONVERSATIONS = [[{"role": "user", "content": q}] for q in QUESTIONS]


def _greedy_model(**overrides: Any) -> TransformersModel:
    """The built-in model decoding greedily in float32 (all such models share one copy of the weights)."""
    kwargs = {"dtype": "float32", "max_new_tokens": MAX_NEW, "temperature": 0, **overrides}
    return TransformersModel(model_id="builtin:tiny-llama", **kwargs)


@pytest.fixture(scope="module")
def greedy() -> TransformersModel:
    return _greedy_model()


@pytest.fixture(scope="module")
def one_by_one(greedy: TransformersModel) -> list[Any]:
    return [greedy(c) for c in CONVERSATIONS]


def test_batch_rows_equal_one_by_one_greedy_calls(greedy: TransformersModel, one_by_one: list[Any]) -> None:
    lengths = {r.token_usage.input_tokens for r in one_by_one}
    assert len(lengths) > 3  # prompts of different lengths: rows really are left-padded
    batch = greedy.generate_batch(CONVERSATIONS)
    for single, row in zip(one_by_one, batch, strict=True):
        assert row.raw["generated_token_ids"] == single.raw["generated_token_ids"]
        assert row.content == single.content and row.token_usage == single.token_usage
        assert (
            row.raw["prompt"] == single.raw["prompt"]
            and row.raw["finish_reason"] == single.raw["finish_reason"]
        )


def test_left_padding_changes_logits_only_by_float_noise(greedy: TransformersModel) -> None:
    """What is guaranteed: a padded row's logits equal the unpadded ones up to float32 rounding (a padded
    batch multiplies matrices of another shape, so sums run in another order; measured ~5e-6 here). Greedy
    tokens are then equal unless two logits tie within that noise, which these prompts never do."""
    import torch

    rows = [greedy._encode(greedy._request(c, None, None, None, None, {})) for c in CONVERSATIONS]
    prep = greedy._prepare(rows)
    assert len({len(r.ids) for r in rows}) > 3
    with torch.inference_mode():
        model = greedy.model
        padded = model(prep.input_ids, attention_mask=prep.gen_kwargs["attention_mask"]).logits[:, -1]
        for i, row in enumerate(rows):
            alone = model(torch.tensor([row.ids])).logits[0, -1]
            assert torch.allclose(padded[i], alone, atol=1e-4, rtol=0), (padded[i] - alone).abs().max()
            assert int(padded[i].argmax()) == int(alone.argmax())


def test_batch_stops_per_row(greedy: TransformersModel, one_by_one: list[Any]) -> None:
    story, count = one_by_one[1].content, one_by_one[4].content
    stops: list[Any] = [None, [story[10:14]], None, ["zzz-never"], [",", "three"], None]
    batch = greedy.generate_batch(CONVERSATIONS, stop_sequences=stops)
    for i, (single, row) in enumerate(zip(one_by_one, batch, strict=True)):
        if not stops[i]:
            assert row.content == single.content and row.raw["stop_sequence"] is None
            continue
        expected = greedy(CONVERSATIONS[i], stop_sequences=stops[i])
        assert row.content == expected.content == trim_at_stop(single.content, stops[i])
        assert row.token_usage == expected.token_usage
        assert row.raw["stop_sequence"] == expected.raw["stop_sequence"]
    assert batch[1].raw["stop_sequence"] == story[10:14] and batch[1].raw["finish_reason"] == "stop"
    assert batch[1].token_usage.output_tokens < one_by_one[1].token_usage.output_tokens  # stopped early
    assert batch[4].content == count[: count.index(",")]
    assert batch[3].content == one_by_one[3].content  # a stop that never occurs changes nothing


def test_batch_one_stop_list_for_every_row_and_prompt_text_never_stops(
    greedy: TransformersModel, one_by_one: list[Any]
) -> None:
    batch = greedy.generate_batch(CONVERSATIONS, stop_sequences=[" ", "user"])  # "user" is in every prompt
    for single, row in zip(one_by_one, batch, strict=True):
        assert row.content == trim_at_stop(single.content, [" ", "user"])
        assert " " not in row.content


def test_batch_size_chunks_and_keeps_the_order(greedy: TransformersModel, one_by_one: list[Any]) -> None:
    batch = greedy.generate_batch(CONVERSATIONS, batch_size=4)
    assert [r.content for r in batch] == [r.content for r in one_by_one]
    assert greedy.generate_batch([]) == []


def test_batch_sampling_is_seeded_and_honours_stops(tiny: TransformersModel) -> None:
    a = tiny.generate_batch(CONVERSATIONS, stop_sequences=["e"], seed=3)
    b = tiny.generate_batch(CONVERSATIONS, stop_sequences=["e"], seed=3)
    assert [r.content for r in a] == [r.content for r in b]
    assert all("e" not in r.content for r in a)
    (single,) = tiny.generate_batch(CONVERSATIONS[:1], seed=5)
    assert single.content == tiny(CONVERSATIONS[0], seed=5).content  # a batch of one is a plain call


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(st.integers(0, len(CONVERSATIONS) - 1), st.one_of(st.none(), st.integers(0, 2**63 - 1))),
        min_size=2,
        max_size=4,
    ),
    top_p=st.sampled_from([None, 0.9]),
)
def test_a_seeded_sampled_row_is_its_reply_alone(
    tiny: TransformersModel, rows: list[tuple[int, int | None]], top_p: float | None
) -> None:
    """Each row samples from its own generator: a row with a seed (``seeds``: one per row) gets the text
    it gets alone with that seed, whatever rows share its batch and in whatever order; a row without one
    gets the model's configured seed (0)."""
    extra = {} if top_p is None else {"top_p": top_p}
    convs = [CONVERSATIONS[i] for i, _ in rows]
    seeds = [seed for _, seed in rows]
    batch = tiny.generate_batch(convs, seeds=seeds, **extra)
    for conv, seed, row in zip(convs, seeds, batch, strict=True):
        alone = tiny(conv, **extra) if seed is None else tiny(conv, seed=seed, **extra)
        assert row.content == alone.content


def test_one_seed_for_a_batch_samples_each_row_as_alone(tiny: TransformersModel) -> None:
    rows = tiny.generate_batch(CONVERSATIONS[:4], seed=11, batch_size=2)  # two generate calls
    assert [r.content for r in rows] == [tiny(c, seed=11).content for c in CONVERSATIONS[:4]]
    with pytest.raises(MessageError, match="seeds has 2 values for 3 conversations"):
        tiny.generate_batch(CONVERSATIONS[:3], seeds=[1, 2])


def test_batch_errors_name_the_row(greedy: TransformersModel, one_by_one: list[Any]) -> None:
    bad = [*CONVERSATIONS[:2], [{"role": "wizard", "content": "x"}]]
    with pytest.raises(MessageError, match=r"conversations\[2\]: messages\[0\]: unknown role"):
        greedy.generate_batch(bad)
    rows = greedy.generate_batch(bad, return_exceptions=True)
    assert [r.content for r in rows[:2]] == [r.content for r in one_by_one[:2]]
    assert isinstance(rows[2], MessageError)
    with pytest.raises(MessageError, match="2 lists for 3 conversations"):
        greedy.generate_batch(bad, stop_sequences=[["a"], None])


def test_batch_with_supports_stop_false_trims_afterwards(one_by_one: list[Any]) -> None:
    model = _greedy_model(supports_stop=False)
    (row,) = model.generate_batch(CONVERSATIONS[1:2], stop_sequences=["town"])
    assert row.content == trim_at_stop(one_by_one[1].content, ["town"])
    assert row.token_usage == one_by_one[1].token_usage  # generated to the end, then trimmed


# --------------------------------------------------------------------------- weight cache


def test_same_weights_are_loaded_once(greedy: TransformersModel) -> None:
    import torch

    from modelfactory.backends.transformers import cached_models

    device = "auto" if torch.cuda.is_available() else "cpu"  # the fixture's auto: the same device
    other = TransformersModel(
        model_id="builtin:tiny-llama", dtype="float32", device=device, temperature=0.7, max_new_tokens=3
    )
    assert other.model is greedy.model and other.tokenizer is greedy.tokenizer
    bf16 = TransformersModel(model_id="builtin:tiny-llama", dtype="bfloat16", max_new_tokens=3, temperature=0)
    assert bf16.model is not greedy.model and bf16.dtype == "bfloat16"
    assert bf16([{"role": "user", "content": "Hi"}]).content is not None
    listed = {(m["source"], m["dtype"]) for m in cached_models()}
    assert {(str(ASSETS / "tiny-llama"), "float32"), (str(ASSETS / "tiny-llama"), "bfloat16")} <= listed
    bf16.free()
    assert (str(ASSETS / "tiny-llama"), "bfloat16") not in {
        (m["source"], m["dtype"]) for m in cached_models()
    }


def test_chat_template_override_does_not_leak_to_models_sharing_the_tokenizer(
    greedy: TransformersModel,
) -> None:
    custom = TransformersModel(
        model_id="builtin:tiny-llama",
        dtype="float32",
        chat_template="{{ messages[0]['content'] }}>>",
        max_new_tokens=2,
    )
    assert custom.tokenizer is greedy.tokenizer
    assert custom.chat_prompt([{"role": "user", "content": "hi"}]) == "hi>>"
    assert greedy.chat_prompt([{"role": "user", "content": "hi"}]).startswith("<|im_start|>user")


def test_free_and_clear_cache_release_the_weights(one_by_one: list[Any]) -> None:
    import gc
    import weakref

    from modelfactory.backends.transformers import cached_models, clear_cache

    a, b = _greedy_model(), _greedy_model()
    assert a.model is b.model
    ref = weakref.ref(a.model)
    a.free()
    gc.collect()
    assert ref() is None  # really gone: neither the cache nor b keeps it alive
    assert not a.is_loaded and not b.is_loaded
    assert b(CONVERSATIONS[0]).content == one_by_one[0].content  # reloaded on the next call
    assert a.model is b.model
    assert clear_cache() >= 1 and cached_models() == []
    assert not b.is_loaded
    assert a(CONVERSATIONS[0]).content == one_by_one[0].content


# --------------------------------------------------------------------------- prompt (KV) cache

AGENT_TURNS = ["What is the capital of France?", "And of Germany?", "Tell me a story about the river."]


def _agent_loop(model: TransformersModel, **kwargs: Any) -> list[Any]:
    """A conversation that grows by the model's own reply and a new user turn, as an agent's does."""
    model.clear_prompt_cache()
    conv: list[dict[str, str]] = [{"role": "system", "content": "You are a helpful assistant."}]
    replies = []
    for turn in AGENT_TURNS:
        conv = [*conv, {"role": "user", "content": turn}]
        reply = model(conv, **kwargs)
        replies.append(reply)
        conv = [*conv, {"role": "assistant", "content": reply.content}]
    return replies


@pytest.fixture(scope="module")
def cold(greedy: TransformersModel) -> list[Any]:
    uncached = _greedy_model(prompt_cache=False)
    assert uncached.model is greedy.model  # same weights: only the prompt cache differs
    return _agent_loop(uncached)


def test_agent_loop_reuses_the_shared_prefix_and_replies_as_without_it(
    greedy: TransformersModel, cold: list[Any]
) -> None:
    warm = _agent_loop(greedy)
    assert [r.content for r in warm] == [r.content for r in cold]
    assert [r.token_usage for r in warm] == [r.token_usage for r in cold]  # usage counts the whole prompt
    assert all(r.raw["cached_prompt_tokens"] == 0 for r in cold)
    cached = [r.raw["cached_prompt_tokens"] for r in warm]
    assert cached[0] == 0
    for k in (1, 2):
        before = warm[k - 1].token_usage
        # the previous prompt and (most of) the previous reply were not prefilled again
        assert before.input_tokens < cached[k] <= before.input_tokens + before.output_tokens
        assert cached[k] < warm[k].token_usage.input_tokens


def test_prompt_cache_with_sampling_streams_and_batches(greedy: TransformersModel, cold: list[Any]) -> None:
    conv = [{"role": "user", "content": AGENT_TURNS[0]}]
    sampled = [greedy(conv, temperature=0.8, seed=3, max_tokens=16) for _ in range(2)]
    assert sampled[1].raw["cached_prompt_tokens"] == sampled[1].token_usage.input_tokens - 1
    assert sampled[1].content == sampled[0].content  # same seed, same text, cached or not
    streamed = list(greedy.generate_stream(conv))  # a stream reuses and leaves the cache like a call
    assert "".join(d.content or "" for d in streamed) == cold[0].content
    assert greedy.runtime.prompt_cache.tokens > 0
    batch = greedy.generate_batch([conv, conv + [{"role": "assistant", "content": "x"}]])
    assert all(r.raw["cached_prompt_tokens"] == 0 for r in batch)  # padded batches never reuse it
    assert greedy(conv).content == cold[0].content


def test_a_failed_or_cancelled_generation_leaves_no_stale_cache(
    greedy: TransformersModel, cold: list[Any]
) -> None:
    from transformers import LogitsProcessor, LogitsProcessorList

    class FailAtStep3(LogitsProcessor):  # type: ignore[misc]
        def __init__(self) -> None:
            self.calls = 0

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            self.calls += 1
            if self.calls == 3:  # the cache already holds the prompt and two new tokens
                raise RuntimeError("failed mid-generation")
            return scores

    conv = [{"role": "user", "content": AGENT_TURNS[0]}]
    greedy(conv)
    with pytest.raises(BackendError, match="failed mid-generation"):
        greedy(conv, logits_processor=LogitsProcessorList([FailAtStep3()]))
    assert greedy.runtime.prompt_cache.tokens == 0
    again = greedy(conv)
    assert again.raw["cached_prompt_tokens"] == 0 and again.content == cold[0].content
    stream = greedy.generate_stream(conv, max_tokens=200)
    assert next(stream).content
    stream.close()  # cancelled: what it leaves behind is a consistent prefix
    assert greedy(conv).content == cold[0].content


def test_beams_and_use_cache_false_neither_use_nor_drop_the_kept_cache(greedy: TransformersModel) -> None:
    conv = [{"role": "user", "content": AGENT_TURNS[0]}]
    first = greedy(conv)
    kept = greedy.runtime.prompt_cache.tokens
    for kwargs in ({"num_beams": 2}, {"use_cache": False}):
        reply = greedy(conv, **kwargs)
        assert reply.raw["cached_prompt_tokens"] == 0 and reply.content == first.content
        assert greedy.runtime.prompt_cache.tokens == kept
    assert greedy(conv).raw["cached_prompt_tokens"] == first.token_usage.input_tokens - 1


def test_beams_set_in_the_models_generation_config_do_not_use_the_kept_cache(
    greedy: TransformersModel,
) -> None:
    conv = [{"role": "user", "content": AGENT_TURNS[0]}]
    first = greedy(conv)
    config = greedy.model.generation_config
    config.num_beams = 2  # as a checkpoint's generation_config.json may set it
    try:
        reply = greedy(conv)
    finally:
        config.num_beams = 1
    assert reply.raw["cached_prompt_tokens"] == 0 and reply.content == first.content
    assert greedy(conv).raw["cached_prompt_tokens"] == first.token_usage.input_tokens - 1


def test_clear_prompt_cache_and_free_drop_the_kept_cache(greedy: TransformersModel) -> None:
    conv = [{"role": "user", "content": AGENT_TURNS[1]}]
    greedy(conv)
    assert greedy.runtime.prompt_cache.tokens > 0
    unloaded = _greedy_model(max_new_tokens=3)  # same weights, not loaded by this model yet
    unloaded.clear_prompt_cache()
    assert greedy.runtime.prompt_cache.tokens == 0 and not unloaded.is_loaded
    greedy(conv)
    rt = greedy.runtime
    greedy.free()
    assert rt.prompt_cache.tokens == 0


def test_clear_prompt_cache_after_the_weights_were_freed_and_reloaded(greedy: TransformersModel) -> None:
    """A model whose copy of the weights was freed (clear_cache) clears the cache of the weights its next
    call will use: those another model reloaded, with that model's kept cache."""
    from modelfactory.backends.transformers import clear_cache

    greedy.load()
    clear_cache()
    other = _greedy_model(max_new_tokens=3)
    other([{"role": "user", "content": AGENT_TURNS[1]}])
    assert other.runtime.prompt_cache.tokens > 0
    greedy.clear_prompt_cache()
    assert other.runtime.prompt_cache.tokens == 0
    assert greedy([{"role": "user", "content": AGENT_TURNS[0]}]).raw["cached_prompt_tokens"] == 0


# --------------------------------------------------------------------------- dtype and device


def test_auto_dtype_is_float32_for_the_builtin_model() -> None:
    model = TransformersModel(model_id="builtin:tiny-llama", max_new_tokens=2)
    assert model.dtype == "float32" and model.device == "cpu"
    assert model.runtime.dtype_reason.startswith("auto:")


def test_auto_dtype_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 on the CPU only with bf16 instructions and a model that is not tiny (see cpu_has_fast_bf16)."""
    import torch
    import transformers

    from modelfactory.backends import transformers as backend

    smollm = transformers.LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    )
    assert 134e6 < backend._approx_params(smollm) < 135e6  # SmolLM-135M
    model = TransformersModel(model_id="builtin:tiny-llama")
    cpu, tiny_dir = torch.device("cpu"), str(ASSETS / "tiny-llama")
    pinned = TransformersModel(model_id="builtin:tiny-llama", dtype="float16")
    assert pinned._dtype(torch, transformers, cpu, tiny_dir, {}) == (torch.float16, "configured")

    monkeypatch.setattr(backend, "_fast_bf16", True)
    dtype, reason = model._dtype(torch, transformers, cpu, tiny_dir, {})
    assert dtype == torch.float32 and "small model" in reason  # ~0.1M parameters
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: smollm)
    assert model._dtype(torch, transformers, cpu, "x", {})[0] == torch.bfloat16
    monkeypatch.setattr(backend, "_fast_bf16", False)
    dtype, reason = model._dtype(torch, transformers, cpu, "x", {})
    assert dtype == torch.float32 and "no bf16 matrix instructions" in reason


@pytest.mark.allow_skip(reason="checks the error on a machine without a GPU; a CI runner may have one")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_clear_error(device: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    model = TransformersModel(model_id="builtin:tiny-llama", device=device, dtype="float32")
    with pytest.raises(BackendError, match="no CUDA GPU"):
        model([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"device": "cuda:"}, "device"),
        ({"device": "CPU"}, "device"),
        ({"dtype": "half"}, "dtype"),
        ({"model_kwargs": {"device_map": "auto"}}, "model_kwargs.device_map"),
        ({"model_kwargs": {"torch_dtype": "float16"}}, "model_kwargs.torch_dtype"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_threads": 0}, "num_threads"),
        ({"num_threads": -1}, "num_threads"),
        ({"num_threads": "two"}, "num_threads"),
        ({"num_threads": 1.5}, "num_threads"),
    ],
)
def test_bad_dtype_device_config(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        TransformersModel(model_id="builtin:tiny-llama", **kwargs)
    assert key in [p.key for p in info.value.problems]


def test_num_threads_holds_for_each_generate_call_and_is_put_back(tiny: TransformersModel) -> None:
    """The model sets torch's threads for its own generate calls (plain, and streamed: generated in
    another thread) and puts torch's setting back after each; a model without num_threads leaves it."""
    import torch

    before = torch.get_num_threads()
    n = 1 if before != 1 else 2
    model = TransformersModel(
        model_id="builtin:tiny-llama", max_new_tokens=4, temperature=0.8, seed=0, num_threads=n
    )
    assert model.cache_key() == tiny.cache_key()  # the same weights: threads decide speed, not the reply
    assert (
        model.spec.cache_identity()
        == TransformersModel(**{**model.spec.model_dump(), "num_threads": None}).spec.cache_identity()
    )
    seen: list[int] = []
    hook = model.model.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    try:
        model(MESSAGES)
        assert seen and set(seen) == {n}
        assert torch.get_num_threads() == before
        seen.clear()
        assert "".join(d.content or "" for d in model.generate_stream(MESSAGES))
        assert seen and set(seen) == {n}
        assert torch.get_num_threads() == before
        seen.clear()
        tiny(MESSAGES, max_tokens=2)  # a model without num_threads runs with torch's own setting
        assert seen and set(seen) == {before}
    finally:
        hook.remove()


def test_works_without_accelerate() -> None:
    code = (
        "import sys\n"
        "sys.modules['accelerate'] = None  # as if not installed\n"
        "from modelfactory.backends.transformers import TransformersModel\n"
        "for dtype in ('auto', 'bfloat16'):\n"
        "    m = TransformersModel(model_id='builtin:tiny-llama', dtype=dtype, device='cpu', max_new_tokens=4)\n"
        "    print(m.dtype, bool(m([{'role': 'user', 'content': 'hi'}]).content))\n"
    )
    out = run_script(code, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["float32", "True", "bfloat16", "True"]


# --------------------------------------------------------------------------- the Hub, offline


def _unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port


def test_unreachable_hub_fails_fast_when_the_model_is_not_cached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import transformers

    _unreachable_hub(monkeypatch)
    loads: list[str] = []
    for auto in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(auto, "from_pretrained", lambda *a, **kw: loads.append(str(a[0])))
    model = TransformersModel(
        model_id="HuggingFaceTB/SmolLM-135M-Instruct", model_kwargs={"cache_dir": str(tmp_path)}
    )
    with pytest.raises(BackendError) as info:
        model([{"role": "user", "content": "hi"}])
    assert loads == []  # failed before transformers asked the Hub (huggingface_hub retries ~50 s)
    message = str(info.value)
    assert "not in the local Hugging Face cache" in message and "unreachable" in message
    assert "builtin:tiny-llama" in message


def test_unreachable_hub_loads_a_cached_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import shutil

    snapshot = tmp_path / "models--acme--tiny" / "snapshots" / "0123abcd"
    shutil.copytree(ASSETS / "tiny-llama", snapshot)
    (tmp_path / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "models--acme--tiny" / "refs" / "main").write_text("0123abcd")
    _unreachable_hub(monkeypatch)
    model = TransformersModel(
        model_id="acme/tiny", model_kwargs={"cache_dir": str(tmp_path)}, max_new_tokens=4
    )
    assert model([{"role": "user", "content": "hi"}]).content is not None
    model.free()
