"""``OpenVINOModel``: a chat model run in-process by OpenVINO GenAI, the fastest CPU path for datasets.

``openvino_genai`` is imported on the first call, so building or validating a config costs nothing.

- **Model**: ``model_id`` is an OpenVINO IR directory, a Hub repo of one (a clear error offline when it
  is not in the Hub cache), or a GGUF file (a path or ``pkg:<package>/<file>``), converted once into
  ``$XDG_CACHE_HOME/modelfactory/openvino`` with ``weight_format`` fp16 (default), int8 or int4
  (:mod:`._convert`; no optimum-intel needed).
- **Precision**: ``weight_format: fp16`` and ``inference_precision: auto`` by default: the CPU plugin's
  choice, bf16 activations on a CPU with AVX512-BF16 or AMX (2.2x the f32 rate on a Xeon with AMX; >= 95%
  top-1 agreement with transformers fp32, every capital-city answer names fp32's capital, the text after
  it may drift), f32 elsewhere. ``f32`` keeps transformers fp32's greedy replies token for token at half
  the speed there. On one CPU thread auto is sent as f32 and bf16 is refused: the plugin dies with SIGFPE
  building a bf16 pipeline there. int8 weights (Q8_0 re-quantized from a 4-bit GGUF) lose ~5% of
  near-tie positions to their rounding (:mod:`._convert`, ``_target_type``).
- **Continuous batching**: every call adds its request to one ``ContinuousBatchingPipeline`` stepped by
  one engine thread (:mod:`._runtime`), so ``generate_batch`` (the runner), concurrent calls (``serve``'s
  clients, async callers) and streams are decoded together in each step.
- **Stops** end generation inside GenAI (``stop_strings``) and the reply is cut under the shared contract
  (:func:`modelfactory.messages.settled_prefix`): the text never holds a stop, streams emit only settled
  text. **Usage** counts every generated token but the end-of-sequence one, the same for a stream.
- **Constrained output**: ``response_format`` (JSON schema), ``grammar`` (EBNF/GBNF text, regex, JSON
  schema) and ``tool_choice: required`` become GenAI's ``StructuredOutputConfig`` (xgrammar).
- **Tools**: the template's own ``tools`` rendering, or a system block when it ignores them; a JSON
  ``{"name", "arguments"}`` reply becomes a tool call.
- **Prompt cache**: OpenVINO's prefix caching reuses the KV blocks of prompt prefixes already computed.
"""

from __future__ import annotations

from ._model import OpenVINOModel
from ._runtime import cached_pipelines, clear_cache
from ._spec import OpenVINOSpec

__all__ = ["OpenVINOModel", "OpenVINOSpec", "cached_pipelines", "clear_cache"]

for _name in ("OpenVINOModel", "cached_pipelines", "clear_cache"):
    globals()[_name].__module__ = __name__
del _name
