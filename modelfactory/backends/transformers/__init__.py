"""``TransformersModel``: a causal LM run in-process with 🤗 transformers (hub id, local dir or built-in).

torch and transformers are imported inside the functions that need them, and the weights are loaded on
the first call, so building (or validating) a config costs nothing.

- **Stop sequences** are enforced *during* generation by decoding only the new tokens (of each row of a
  batch), which catches stops that span several tokens and never matches text of the prompt.
- **Batches**: :meth:`TransformersModel.generate_batch` left-pads several conversations into one
  ``generate`` call; each row stops on its own stops / eos.
- **Weight cache**: models built with the same (source, revision, dtype, device, trust_remote_code,
  model_kwargs) in one process share one loaded copy of the weights, so a sweep over generation
  parameters loads them once. :meth:`TransformersModel.free` / :func:`clear_cache` release them.
- **Prompt cache**: a call on one conversation reuses the KV cache of the token prefix it shares with the
  previous such call (prompt and reply), so an agent loop prefills only each step's new turns
  (``prompt_cache: false`` turns it off; ``raw["cached_prompt_tokens"]`` says how much was reused).
- **dtype ``auto``**: bfloat16 on CUDA (float16 where bf16 is not supported); on CPU bfloat16 only where
  the CPU has bf16 matrix instructions (AVX512-BF16 / AMX on x86, the ``bf16`` feature on Arm) and the
  model is big enough for memory bandwidth to matter; float32 otherwise. See :func:`cpu_has_fast_bf16`.
- **GGUF files** (``pkg:<package>/<file>``, a ``.gguf`` path, or ``gguf_file``): dequantized on the first
  load and kept as safetensors under the user cache dir; later loads read those.
- **Threads**: ``num_threads`` sets ``torch.set_num_threads`` for each of the model's generate calls, in
  the generating thread, and puts it back after (null: torch's own); fewer than the cores when others
  share them. libgomp's spin (fast on an idle machine) made calls 6-40x slower beside other CPU-bound
  processes: unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set, a contention guard cuts the spin
  while the process waits for CPUs and gives it back when they are free (:mod:`._threads`,
  ``bench/omp_wait_policy.py``).
- Works without ``accelerate``: no ``device_map`` is ever passed; weights load on the CPU, then move
  (only converting a GGUF file needs it, and ``gguf``: the ``gguf`` extra).

Modules, in the order a call meets them: ``_spec`` (validated settings, weight-cache key) ->
``_sources`` (built-in, local dir, GGUF/package file, Hub) -> ``_loading`` (imports, device, tokenizer and
weights; ``_dtype`` the ``auto`` policy, ``_gguf`` the dequantize-once disk cache) -> ``_weights`` (the
process-wide weight cache and generation lock) -> ``_model`` (``TransformersModel``: prompts via ``_chat``,
``generate``, batches, streams) with ``_stopping`` (stops and streaming on the shared
``messages.settled_prefix``) and ``_prompt_cache`` (KV reuse across calls).
"""

from __future__ import annotations

from .._local import tools_block  # shared with LlamaCppModel; imported from here before
from . import _dtype
from ._dtype import cpu_has_fast_bf16
from ._model import TransformersModel
from ._sources import ASSETS, BUILTIN_MODELS, builtin_path
from ._spec import TransformersSpec
from ._stopping import stop_state
from ._weights import cached_models, clear_cache

__all__ = [
    "ASSETS",
    "BUILTIN_MODELS",
    "TransformersModel",
    "TransformersSpec",
    "builtin_path",
    "cached_models",
    "clear_cache",
    "cpu_has_fast_bf16",
    "stop_state",
    "tools_block",
]

_approx_params = _dtype.approx_params  # its name before the split (tests check the estimate through it)

# cpu_has_fast_bf16's verdict, detected once per process (None: not yet). It lives here, on the package,
# so that it can be pinned from outside (``modelfactory.backends.transformers._fast_bf16 = False``).
_fast_bf16: bool | None = None

# Public names say they live here, whichever private module defines them (httpx's convention): a model's
# ``to_dict()`` keeps ``_target_: modelfactory.backends.transformers.TransformersModel``.
for _public in (TransformersModel, builtin_path, cached_models, clear_cache, cpu_has_fast_bf16):
    _public.__module__ = __name__
