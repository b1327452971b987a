"""Vision-language models: loaded with ``AutoModelForImageTextToText`` + ``AutoProcessor`` (what smolagents'
``TransformersModel`` tries first), and answered with the images of the conversation.

Kept apart from the text path: a VLM's prompt is built by its processor (image tokens + pixel values), and
its replies skip the prompt KV cache (the image tokens of two different images have the same ids).
Images come as PIL images or base64 data URLs (normalised to data URLs); nothing is fetched from a URL.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from ...errors import UnsupportedFeatureError
from ...messages import ChatMessage, GenerationRequest, TokenUsage
from ._spec import TransformersSpec
from ._weights import GENERATE_LOCK, Runtime

__all__ = ["generate_with_images", "load_vision"]


def load_vision(
    transformers: Any,
    source: str,
    dtype: Any,
    trust_remote_code: bool,
    kwargs: dict[str, Any],
    hub: dict[str, Any],
) -> tuple[Any, Any] | None:
    """(processor, weights) when ``source`` is a vision-language model; None for any other model (a causal
    LM: transformers says "Unrecognized configuration class" before reading any weight)."""
    auto = getattr(transformers, "AutoModelForImageTextToText", None)
    if auto is None:
        return None
    try:
        weights = auto.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            return None
        raise
    processor = transformers.AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code, **hub)
    return processor, weights


def _image(url: str, where: str) -> Any:
    head, sep, data = url.partition(",")
    if not (url.startswith("data:") and sep and head.endswith(";base64")):
        raise UnsupportedFeatureError(
            f"{where}: TransformersModel reads images from PIL images or base64 data URLs, not from {head[:40]!r}"
        )
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def _rows(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for i, msg in enumerate(messages):
        content = msg.get("content") or ""
        parts: list[dict[str, Any]] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        else:
            for j, part in enumerate(content):
                if part["type"] == "text":
                    parts.append({"type": "text", "text": part["text"]})
                else:
                    parts.append(
                        {"type": "image", "image": _image(part["image_url"]["url"], f"messages[{i}][{j}]")}
                    )
        rows.append({"role": msg["role"], "content": parts})
    return rows


def generate_with_images(rt: Runtime, spec: TransformersSpec, req: GenerationRequest) -> ChatMessage:
    """One reply of a vision-language model (``rt``: its loaded runtime): the processor's prompt (text and
    pixels), greedy unless the request samples; the stops are trimmed by the base class."""
    torch = rt.torch
    inputs = rt.processor.apply_chat_template(
        _rows(req.messages), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    inputs = {k: v.to(rt.device) for k, v in inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(rt.dtype)
    params = dict(req.params)
    max_new = int(params.pop("max_tokens", None) or spec.max_new_tokens)
    temperature = params.pop("temperature", None)
    do_sample = temperature > 0 if temperature is not None else bool(spec.do_sample)
    seed = params.pop("seed", None)
    kwargs: dict[str, Any] = {"max_new_tokens": max_new, "do_sample": do_sample, "pad_token_id": rt.pad_id}
    if do_sample and temperature:
        kwargs["temperature"] = float(temperature)
    with GENERATE_LOCK, torch.no_grad():
        if seed is not None:
            torch.manual_seed(int(seed))
        output = rt.model.generate(**inputs, **kwargs)
    prompt_len = int(inputs["input_ids"].shape[1])
    new_ids = [int(t) for t in output[0, prompt_len:]]
    end = next((i for i, t in enumerate(new_ids) if t in rt.eos_ids), len(new_ids))
    text = rt.tokenizer.decode(new_ids[:end], skip_special_tokens=True)
    return ChatMessage(
        role="assistant",
        content=text,
        token_usage=TokenUsage(input_tokens=prompt_len, output_tokens=end),
        raw={
            "generated_token_ids": new_ids[:end],
            "finish_reason": "stop" if end < len(new_ids) else "length",
        },
    )
