"""TransformersModel on a vision-language model (a tiny Llava built locally, random weights): loaded as
smolagents does (AutoModelForImageTextToText + AutoProcessor first, causal LMs as the fallback), and
answering conversations that hold images (PIL images, as agents store screenshots, or data URLs)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")

from modelfactory import TransformersModel  # noqa: E402
from modelfactory.errors import UnsupportedFeatureError  # noqa: E402
from modelfactory.messages import pil_to_data_url  # noqa: E402
from tests.backends.tiny_vlm import build_tiny_vlm  # noqa: E402


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"))


def _ask(image: object) -> list[dict[str, object]]:
    return [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}]}
    ]


def test_a_vlm_answers_with_the_image_as_transformers_itself_does(vlm_dir: Path) -> None:
    import transformers

    model = TransformersModel(str(vlm_dir), max_tokens=6, device="cpu")
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    reply = model.generate(_ask(image))
    assert model.runtime.processor is not None
    assert type(model.runtime.model).__name__ == "LlavaForConditionalGeneration"
    # the oracle: transformers' own processor + generate on the same conversation, greedy
    processor = transformers.AutoProcessor.from_pretrained(vlm_dir)
    inputs = processor.apply_chat_template(
        _ask(image), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    out = model.runtime.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    ids = [int(t) for t in out[0, inputs["input_ids"].shape[1] :]]
    eos = model.runtime.eos_ids
    ids = ids[: next((i for i, t in enumerate(ids) if t in eos), len(ids))]
    assert reply.content == processor.tokenizer.decode(ids, skip_special_tokens=True)
    assert reply.token_usage is not None
    assert reply.token_usage.input_tokens == inputs["input_ids"].shape[1]  # the image tokens count
    assert reply.token_usage.output_tokens == len(ids)
    # a data URL of the same picture is the same conversation
    assert model.generate(_ask(pil_to_data_url(image))).content == reply.content


def test_an_image_url_is_not_fetched(vlm_dir: Path) -> None:
    model = TransformersModel(str(vlm_dir), max_tokens=2, device="cpu")
    with pytest.raises(UnsupportedFeatureError, match="PIL images or base64 data URLs"):
        model.generate(_ask("https://example.com/cat.png"))


def test_a_causal_lm_still_loads_as_one() -> None:
    model = TransformersModel("builtin:tiny-llama", max_tokens=2, device="cpu")
    assert model.generate([{"role": "user", "content": "Hi"}]).content is not None
    assert model.runtime.processor is None


def test_a_causal_lm_is_told_apart_by_its_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without trying AutoModelForImageTextToText: its refusal of a causal LM names every configuration
    class it takes, and importing them (~100 modules) cost 0.6-1.3 s of each process's first text model."""
    import transformers

    from modelfactory.backends.transformers._sources import builtin_path
    from modelfactory.backends.transformers._vision import load_vision

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("AutoModelForImageTextToText.from_pretrained was tried on a causal LM")

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", refuse)
    source = str(builtin_path("builtin:tiny-llama"))
    assert load_vision(transformers, source, None, False, {}, {}) is None


def test_batches_and_streams_carry_the_images(vlm_dir: Path) -> None:
    """generate_batch (what the runner and serve call) and generate_stream answer an image conversation as
    generate does: each row with its own image (and its own seed), the stream adding up to the reply."""
    model = TransformersModel(str(vlm_dir), max_tokens=6, device="cpu")
    images = [Image.new("RGB", (40, 30), c) for c in [(200, 10, 10), (10, 10, 200)]]
    alone = [model.generate(_ask(im), temperature=0.8, seed=i).content for i, im in enumerate(images)]
    rows = model.generate_batch([_ask(im) for im in images], temperature=0.8, seeds=[0, 1])
    assert [r.content for r in rows] == alone
    greedy = model.generate(_ask(images[0]))
    deltas = list(model.generate_stream(_ask(images[0])))
    assert "".join(d.content or "" for d in deltas) == greedy.content
    assert deltas[-1].token_usage == greedy.token_usage
