"""Vision-language models: loaded with ``AutoModelForImageTextToText`` + ``AutoProcessor`` (what smolagents'
``TransformersModel`` tries first), and answered with the images of the conversation.

Kept apart from the text path: a VLM's prompt is built by its processor (image tokens + pixel values), and
its replies skip the prompt KV cache (the image tokens of two different images have the same ids).
Images come as PIL images or base64 data URLs (normalised to data URLs); nothing is fetched from a URL.
"""

from __future__ import annotations

import base64
import contextlib
import io
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ...errors import BackendError, UnsupportedFeatureError
from ...messages import ChatMessage, ChatMessageStreamDelta, GenerationRequest, TokenUsage, trim_at_stop
from .._local import tools_block
from ._sampling import row_sampler, samples_per_row
from ._stopping import cancel_criteria, criteria_list, settled_streamer, stop_criteria, stream_generation
from ._weights import GENERATE_LOCK

if TYPE_CHECKING:
    from ._spec import TransformersSpec
    from ._weights import Runtime


class TransformersModel(Protocol):
    """What this module needs of the model (a Protocol, so it does not import ``_model``, which imports
    this module: no circle, not even through annotations)."""

    @property
    def runtime(self) -> Runtime: ...

    spec: TransformersSpec

    def parse_tool_calls(self, message: ChatMessage) -> ChatMessage: ...


__all__ = ["count_image_prompt", "generate_with_images", "load_vision", "stream_with_images"]


def load_vision(
    transformers: Any,
    source: str,
    dtype: Any,
    trust_remote_code: bool,
    kwargs: dict[str, Any],
    hub: dict[str, Any],
) -> tuple[Any, Any] | None:
    """(processor, weights) when ``source`` is a vision-language model; None for any other model (a causal
    LM), told by its config; where transformers lacks the auto class's mapping, by its refusal
    ("Unrecognized configuration class", said before reading any weight)."""
    auto = getattr(transformers, "AutoModelForImageTextToText", None)
    if auto is None:
        return None
    mapping = getattr(auto, "_model_mapping", None)  # the config classes it takes (transformers' own)
    if mapping is not None:
        # Decided from the config when it can be: for a causal LM, from_pretrained's refusal names every
        # configuration class the auto class takes, and importing them (~100 modules) cost 0.6-1.3 s of each
        # process's first load of a text model. A config class it takes, or remote code it names: try it.
        config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **hub)
        if type(config) not in mapping and auto.__name__ not in (getattr(config, "auto_map", None) or {}):
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


def _inputs(
    model: TransformersModel, messages: list[dict[str, Any]], tools: Sequence[dict[str, Any]] | None
) -> dict[str, Any]:
    """The processor's prompt for ``messages`` (text and pixels) on the model's device; ``tools`` are
    written into the system message, as the text path does for a template that ignores them."""
    rt = model.runtime
    rows = _rows(messages)
    if tools:
        block = {"type": "text", "text": tools_block(tools)}
        if rows and rows[0]["role"] == "system":
            rows[0] = {"role": "system", "content": [block, *rows[0]["content"]]}
        else:
            rows.insert(0, {"role": "system", "content": [block]})
    inputs = rt.processor.apply_chat_template(
        rows, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    inputs = {k: v.to(rt.device) for k, v in inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(rt.dtype)
    return dict(inputs)


def count_image_prompt(
    model: TransformersModel, messages: list[dict[str, Any]], tools: Sequence[dict[str, Any]] | None
) -> int:
    """How many tokens the processor makes of a conversation (each image's tokens included)."""
    return int(_inputs(model, messages, tools)["input_ids"].shape[1])


def _generate_kwargs(model: TransformersModel, req: GenerationRequest, prompt_len: int) -> dict[str, Any]:
    """``generate``'s arguments: greedy unless the request samples (a seeded one from its own generator,
    as the text path), stopping early at a stop sequence."""
    rt = model.runtime
    params = dict(req.params)
    max_new = int(
        params.pop("max_tokens", None) or params.pop("max_new_tokens", None) or model.spec.max_new_tokens
    )
    temperature = params.pop("temperature", None)
    top_p = params.pop("top_p", None)
    seed = params.pop("seed", None)
    do_sample = temperature > 0 if temperature is not None else bool(model.spec.do_sample)
    kwargs: dict[str, Any] = {"max_new_tokens": max_new, "do_sample": do_sample, "pad_token_id": rt.pad_id}
    if do_sample and temperature:
        kwargs["temperature"] = float(temperature)
    if do_sample and top_p is not None:
        kwargs["top_p"] = float(top_p)
    if seed is not None and samples_per_row(kwargs, rt.model.generation_config):
        kwargs["logits_processor"] = row_sampler(rt.torch, kwargs, rt.model.generation_config, [seed])
    if req.provider_stop:
        kwargs["stopping_criteria"] = criteria_list(
            stop_criteria(rt.tokenizer, prompt_len, [req.provider_stop])
        )
    return kwargs


def _run(model: TransformersModel, inputs: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    """``generate`` under the generation lock; torch's global generator left as it was."""
    rt = model.runtime
    torch = rt.torch
    devices = [rt.device.index or 0] if rt.device.type == "cuda" else []
    with GENERATE_LOCK, torch.inference_mode(), torch.random.fork_rng(devices=devices):
        return rt.model.generate(**inputs, **kwargs)


def generate_with_images(model: TransformersModel, req: GenerationRequest) -> ChatMessage:
    """One reply of a vision-language model: the processor's prompt (text and pixels), greedy unless the
    request samples; cut at its first stop; a JSON tool call in the text parsed when tools were given."""
    rt = model.runtime
    inputs = _inputs(model, req.messages, req.tools)
    prompt_len = int(inputs["input_ids"].shape[1])
    output = _run(model, inputs, _generate_kwargs(model, req, prompt_len))
    new_ids = [int(t) for t in output[0, prompt_len:]]
    end = next((i for i, t in enumerate(new_ids) if t in rt.eos_ids), len(new_ids))
    text = rt.tokenizer.decode(new_ids[:end], skip_special_tokens=True)
    content = trim_at_stop(text, req.stop_sequences) if req.stop_sequences else text
    stopped = end < len(new_ids) or content != text
    reply = ChatMessage(
        role="assistant",
        content=content,
        token_usage=TokenUsage(input_tokens=prompt_len, output_tokens=end),
        raw={"generated_token_ids": new_ids[:end], "finish_reason": "stop" if stopped else "length"},
    )
    if req.tools:
        with contextlib.suppress(BackendError):
            model.parse_tool_calls(reply)
    return reply


def stream_with_images(model: TransformersModel, req: GenerationRequest) -> Iterator[ChatMessageStreamDelta]:
    """The reply of :func:`generate_with_images` as it is generated (the pieces add up to its text), then
    a delta with the usage; closing the stream stops the generation."""
    rt = model.runtime
    inputs = _inputs(model, req.messages, req.tools)
    prompt_len = int(inputs["input_ids"].shape[1])
    kwargs = _generate_kwargs(model, req, prompt_len)
    cancel = threading.Event()
    kwargs["stopping_criteria"] = criteria_list(
        *(kwargs.get("stopping_criteria") or []), cancel_criteria(cancel)
    )
    streamer = settled_streamer(rt.tokenizer, req.stop_sequences)
    output = yield from stream_generation(
        lambda: _run(model, inputs, {**kwargs, "streamer": streamer}), streamer, cancel
    )
    new_ids = [int(t) for t in output[0, prompt_len:]]
    end = next((i for i, t in enumerate(new_ids) if t in rt.eos_ids), len(new_ids))
    yield ChatMessageStreamDelta(token_usage=TokenUsage(input_tokens=prompt_len, output_tokens=end))
