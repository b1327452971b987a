"""Build ``modelfactory/assets/tiny-llama``: a tiny Llama-architecture chat model that ships with the package.

Why: the default config must run offline, on any CPU, in well under a second, yet go through exactly the
code path of a real hub model (``AutoTokenizer`` + chat template + ``AutoModelForCausalLM``). So the asset
is a real byte-level BPE tokenizer (trained here on the embedded text below), a ChatML chat template, and
a ``LlamaConfig`` model (~124k parameters) initialised with ``torch.manual_seed(0)`` and then trained for a
few seconds on the same text and on a dozen ChatML conversations about it. So a reply depends on the
prompt ("What is the capital of France?" -> "The capital of France is Paris.") and reads as English
instead of uniform noise; anything else gets a plausible-looking jumble of the text below.

Deterministic: one thread, fixed seeds, no data but the text in this file. Re-running it rewrites
byte-identical files on the same platform and library versions (recorded in ``build_info.json``).

    python scripts/build_tiny_model.py [--out DIR] [--steps N]   # --steps 0: pure random init
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # the tokenizers trainer: one thread, one order of merges
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "modelfactory" / "assets" / "tiny-llama"

VOCAB_SIZE = 768
BOS, EOS, PAD = "<|im_start|>", "<|im_end|>", "<|pad|>"
SPECIAL_TOKENS = [PAD, BOS, EOS]

# ChatML, as SmolLM / Qwen use it. A content given as a list of text parts is joined with newlines.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set content = message['content'] -%}"
    "{%- elif message['content'] is none -%}{%- set content = '' -%}"
    "{%- else -%}{%- set content = message['content'] | map(attribute='text') | join('\n') -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' + content + '<|im_end|>' + '\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

# Each paragraph is plain training text and, below, the answer to a chat question.
PARAGRAPHS: dict[str, str] = {
    "town": """\
The small town sat at the edge of a wide river, and every morning the baker opened her shop before the sun
was up. She made bread, rolls and sweet cakes, and the smell of warm bread drifted down the street to the
harbour, where the fishing boats came home with the night's catch. The children walked to school along the
river path, and the old teacher waited for them at the gate with a bell in her hand.""",
    "model": """\
A model is a simple thing when you look at it closely. It reads a few words, it guesses the next word, and
then it reads its own guess and guesses again. Most of the time the guess is plain and useful. Sometimes it
is wrong, and a careful reader notices. Good tools make the careful reader's work easier: they show what
the model saw, what it said, and how many tokens it used to say it.""",
    "hello": """\
Hello! How can I help you today? I can answer questions, write a short story, or explain an idea in simple
words. Please tell me what you would like to do, and I will do my best to help. Thank you for asking.""",
    "seasons": """\
In the spring the farmers planted wheat and barley in the fields above the town. In the summer the fields
turned from green to gold, and in the autumn the harvest came in on long carts pulled by horses. In the
winter the river froze at its edges, and the people of the town gathered by the fire to tell old stories.""",
    "fox": """\
One story told of a fox who learned to read. The fox read every book in the library, and then he wrote a
book of his own, about a town by a river, a baker, a teacher and a bell.""",
    "words": """\
Here is a list of useful words: apple, bread, river, garden, window, letter, number, water, summer, winter,
morning, evening, question, answer, story, music, paper, pencil, table, chair, light, house, road, stone.""",
    "tea": """\
To make a cup of tea, boil fresh water, warm the pot, add one spoon of tea for each cup, pour the water,
wait three or four minutes, and then pour the tea into a cup. Add milk or lemon if you like it that way.""",
    "weather": """\
The weather today is mild and dry, with a light wind from the west. Tomorrow there will be rain in the
morning and sunshine in the afternoon. The sea is calm, and the boats will sail at first light.""",
    "code": """\
def add(a, b):
    return a + b

def greet(name):
    return "Hello, " + name + "!"

for i in range(10):
    print(i, add(i, i))""",
    "counting": """\
Numbers are counted one, two, three, four, five, six, seven, eight, nine and ten. Letters are written
a, b, c, d, e, f and so on to z. A sentence starts with a capital letter and ends with a full stop.""",
    "stars": """\
The library was quiet in the afternoon. A student read about the stars, the planets and the long journey
of light across space. The light we see from a far star left it long ago, before the town was built, before
the river found its bed, before the first bread was baked by the first baker in the first small shop.""",
}

QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many days are there in a week?", "There are seven days in a week."),
    ("What colour is the sky on a clear day?", "The sky is blue on a clear day."),
    ("What do bees make?", "Bees make honey and wax."),
    ("Which is larger, the sun or the moon?", "The sun is much larger than the moon."),
]

CORPUS = (
    "\n\n".join(list(PARAGRAPHS.values()) + ["\n".join(f"Question: {q}\nAnswer: {a}" for q, a in QA)]) + "\n"
)

# (user message, assistant reply): teaches the model that the reply depends on the question.
CHATS: list[tuple[str, str]] = [
    *QA,
    ("Hello!", PARAGRAPHS["hello"]),
    ("Hi, who are you?", PARAGRAPHS["hello"]),
    ("Tell me a story.", PARAGRAPHS["town"]),
    ("Tell me about the fox.", PARAGRAPHS["fox"]),
    ("What is a language model?", PARAGRAPHS["model"]),
    ("What happens in the seasons?", PARAGRAPHS["seasons"]),
    ("Give me some useful words.", PARAGRAPHS["words"]),
    ("How do I make tea?", PARAGRAPHS["tea"]),
    ("What is the weather like?", PARAGRAPHS["weather"]),
    ("Write some Python code.", PARAGRAPHS["code"]),
    ("Count to ten.", PARAGRAPHS["counting"]),
    ("Tell me about the stars.", PARAGRAPHS["stars"]),
]
SYSTEM_PROMPTS = ["", "You are a helpful assistant."]


def chat_documents() -> list[str]:
    """Every chat rendered with :data:`CHAT_TEMPLATE`'s layout, with and without a system message."""
    docs = []
    for system in SYSTEM_PROMPTS:
        for user, reply in CHATS:
            head = f"{BOS}system\n{system}{EOS}\n" if system else ""
            docs.append(f"{head}{BOS}user\n{user}{EOS}\n{BOS}assistant\n{reply}{EOS}\n")
    return docs


def build_tokenizer() -> object:
    """Byte-level BPE trained on :data:`CORPUS`, wrapped as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = CORPUS.splitlines(keepends=True) + [user + "\n" for user, _ in CHATS] + SYSTEM_PROMPTS
    tok.train_from_iterator(lines, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,  # decode(prefix) must stay a prefix of decode(all)
        model_max_length=512,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer: object, steps: int) -> object:
    """A tiny ``LlamaForCausalLM``: seeded init, then ``steps`` of next-token training on the corpus."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = tokenizer  # PreTrainedTokenizerFast
    config = LlamaConfig(
        vocab_size=len(tok),  # type: ignore[arg-type]
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,  # type: ignore[attr-defined]
        eos_token_id=tok.eos_token_id,  # type: ignore[attr-defined]
        pad_token_id=tok.pad_token_id,  # type: ignore[attr-defined]
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    if steps > 0:
        encode = tok.backend_tokenizer.encode  # type: ignore[attr-defined]
        corpus = torch.tensor(encode(CORPUS).ids)
        chats = [torch.tensor(encode(doc).ids) for doc in chat_documents()]
        pad = int(tok.pad_token_id)  # type: ignore[attr-defined]
        seq, batch = 128, 16
        width = max(len(c) for c in chats)
        gen = torch.Generator().manual_seed(0)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        model.train()
        for step in range(steps):
            if step % 2:  # a batch of whole chats, padded (pads are masked out of the loss)
                pick = torch.randint(0, len(chats), (batch,), generator=gen)
                x = torch.full((batch, width), pad)
                for row, k in enumerate(pick.tolist()):
                    x[row, : len(chats[k])] = chats[k]
                labels = x.masked_fill(x == pad, -100)
                loss = model(input_ids=x, attention_mask=(x != pad).long(), labels=labels).loss
            else:  # a batch of windows of the plain text
                starts = torch.randint(0, len(corpus) - seq - 1, (batch,), generator=gen)
                x = torch.stack([corpus[s : s + seq] for s in starts])
                loss = model(input_ids=x, labels=x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 100 == 0 or step == steps - 1:
                print(f"step {step:4d}  loss {loss.item():.3f}")
        model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,  # type: ignore[attr-defined]
        eos_token_id=tok.eos_token_id,  # type: ignore[attr-defined]
        pad_token_id=tok.pad_token_id,  # type: ignore[attr-defined]
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=300, help="training steps on the corpus (0: random)")
    args = parser.parse_args()

    import tokenizers
    import torch
    import transformers

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, args.steps)

    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out)  # type: ignore[attr-defined]
    tokenizer.save_pretrained(out)  # type: ignore[attr-defined]
    # transformers 5 writes its new class name; the old one loads in 4.x and 5.x alike.
    tok_config_path = out / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text())
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_config_path.write_text(json.dumps(tok_config, indent=2, sort_keys=True) + "\n")
    info = {
        "built_by": "scripts/build_tiny_model.py",
        "train_steps": args.steps,
        "corpus_sha256": hashlib.sha256("".join([CORPUS, *chat_documents()]).encode()).hexdigest(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    total = 0
    for path in sorted(out.iterdir()):
        path.chmod(0o644)  # safetensors writes 0600: package data must be readable by every user
        size = path.stat().st_size
        total += size
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        print(f"{size:>9,d}  {digest}  {path.name}")
    print(f"{total:>9,d}  total bytes in {out}")


if __name__ == "__main__":
    main()
