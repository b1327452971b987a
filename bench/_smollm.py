"""A SmolLM-135M-shaped Llama with random weights, built offline once and cached for the benchmarks.

Same shapes as ``HuggingFaceTB/SmolLM-135M-Instruct`` (30 layers, hidden 576, GQA 9/3 heads, vocab 49152,
tied embeddings, bf16 checkpoint), so a decode step costs what the real model's does; the weights are
random (seeded), so the text is noise. The tokenizer is a byte-level BPE trained in ~2 s on the Python
standard library's top-level modules, padded with filler tokens up to 49152 entries, with SmolLM's
ChatML template.

    .venv/bin/python -m bench._smollm [--out DIR]     # prints the directory
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sysconfig
from pathlib import Path

VOCAB_SIZE = 49152
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_VERSION = "1"  # bump to rebuild cached copies


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelfactory" / "bench" / f"smollm-135m-shaped-v{_VERSION}"


def _tokenizer() -> object:
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))

    def lines() -> object:
        for name in files:
            with open(name, encoding="utf-8", errors="replace") as fh:
                yield from fh

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines(), trainer=trainer)
    # Pad the vocabulary with filler words (unreachable by encoding, decodable like any other token).
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    letters = "abcdefghijklmnopqrstuvwxyz"
    n = 0
    while len(vocab) < VOCAB_SIZE:
        word, k = "", n
        while True:
            word += letters[k % 26]
            k //= 26
            if not k:
                break
        n += 1
        for cand in ("Ġ" + word + "x", word + "q"):
            if cand not in vocab and len(vocab) < VOCAB_SIZE:
                vocab[cand] = len(vocab)
    tok = Tokenizer.from_str(json.dumps(data))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(out: Path) -> Path:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = _tokenizer()
    assert len(tok) == VOCAB_SIZE, len(tok)  # type: ignore[arg-type]
    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,  # type: ignore[attr-defined]
        eos_token_id=tok.eos_token_id,  # type: ignore[attr-defined]
        pad_token_id=tok.pad_token_id,  # type: ignore[attr-defined]
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)  # the real checkpoint is stored in bf16
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)  # type: ignore[attr-defined]
    tmp.rename(out)
    return out


def ensure(out: Path | None = None) -> Path:
    """The cached model directory, built on first use (~10 s)."""
    out = out or default_dir()
    if not (out / "model.safetensors").exists():
        build(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    print(ensure(parser.parse_args().out))


if __name__ == "__main__":
    main()


# --------------------------------------------------------------------------- shared by the local benches

PROMPTS = [
    "Write a short poem about the sea.",
    "Explain what a hash table is.",
    "List three uses of copper.",
    "What is the boiling point of water at sea level, and why does it change on a mountain?",
    "Summarise the plot of a detective story in two sentences.",
    "Translate 'good morning' into French.",
    "Give me a recipe for pancakes.",
    "Why is the sky blue?",
]


def conversations(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}] for i in range(n)]


def median_ratio(a: list[float], b: list[float]) -> float:
    """The median of the per-round ratios a[i] / b[i] (each pair measured back to back)."""
    import statistics

    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def setup_torch(threads: int | None = None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
