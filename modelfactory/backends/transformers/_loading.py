"""Loading: torch and transformers imported (naming the extra when missing), the device chosen, then the
tokenizer and weights read from wherever ``model_id`` points, with errors that say how to fix them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import BackendError, MissingDependencyError
from ._gguf import converted_dir
from ._prompt_cache import cache_kwarg
from ._sources import HUB_KWARGS, hub_offline, hub_unreachable, in_hub_cache
from ._vision import load_vision
from ._weights import Runtime

if TYPE_CHECKING:
    from ._model import TransformersModel

__all__ = ["import_backend", "load_runtime", "quiet_loading", "resolve_device"]


def load_runtime(model: TransformersModel, key: tuple[Any, ...]) -> Runtime:
    """Load ``model``'s tokenizer and weights (``key``: its weight-cache key), or raise a clear error."""
    start = time.perf_counter()
    torch, transformers = import_backend(type(model).__name__)
    spec = model.spec
    device = resolve_device(model, torch)
    source = spec.source()
    local = Path(source).is_dir()
    hub_kwargs: dict[str, Any] = {"revision": spec.revision}
    hub_kwargs.update({k: spec.model_kwargs[k] for k in HUB_KWARGS if k in spec.model_kwargs})
    if not local and not hub_kwargs.get("local_files_only"):
        if hub_offline():
            hub_kwargs["local_files_only"] = True
        else:
            unreachable = hub_unreachable()
            if unreachable is not None:
                if not in_hub_cache(source, spec.revision, hub_kwargs.get("cache_dir")):
                    raise _unreachable_error(model, unreachable)
                hub_kwargs["local_files_only"] = True  # cached: load it without the Hub
    model_kwargs = spec.model_kwargs
    gguf = spec.gguf()
    converted = None
    if gguf is not None:  # read (or first write) the dequantized copy: a plain local model directory
        converted = converted_dir(
            transformers,
            _gguf_path(source, gguf, local, hub_kwargs, transformers, model),
            backend=type(model).__name__,
            model_id=model.model_id,
        )
        source, local, hub_kwargs = converted.directory, True, {}
        model_kwargs = {k: v for k, v in model_kwargs.items() if k not in HUB_KWARGS}
    try:
        with quiet_loading(transformers, local):
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                source, trust_remote_code=spec.trust_remote_code, **hub_kwargs
            )
            dtype, reason = model._dtype(torch, transformers, device, source, hub_kwargs)
            # a vision-language model first, as smolagents does (not for a GGUF: those are causal LMs)
            vision = None
            if gguf is None:
                weights_kwargs = {**model_kwargs, **hub_kwargs}
                vision = load_vision(
                    transformers, source, dtype, spec.trust_remote_code, weights_kwargs, hub_kwargs
                )
            processor, weights = vision if vision is not None else (None, None)
            if weights is None:
                weights = transformers.AutoModelForCausalLM.from_pretrained(
                    source,
                    dtype=dtype,
                    trust_remote_code=spec.trust_remote_code,
                    **{**model_kwargs, **hub_kwargs},
                )
    except (OSError, ValueError) as exc:
        raise _load_error(model, exc, local) from None
    weights.to(device)
    weights.eval()
    eos = weights.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = weights.generation_config.pad_token_id
    if pad_id is None and eos_ids:
        pad_id = min(eos_ids)
    from transformers.generation import utils as generation_utils

    return Runtime(
        torch=torch,
        tokenizer=tokenizer,
        model=weights,
        device=device,
        dtype=weights.dtype,
        eos_ids=eos_ids,
        pad_id=pad_id,
        key=key,
        dtype_reason=reason,
        load_s=time.perf_counter() - start,
        cache_kwarg=cache_kwarg(generation_utils),
        gguf=converted,
        processor=processor,
    )


def _gguf_path(
    source: str,
    gguf: str,
    local: bool,
    hub_kwargs: dict[str, Any],
    transformers: Any,
    model: TransformersModel,
) -> Path:
    """The GGUF file on this machine: in the local directory, or fetched from (or found in the cache of)
    the hub repo ``source``."""
    if local:
        return Path(source) / gguf
    try:
        return Path(transformers.utils.cached_file(source, gguf, **hub_kwargs))
    except (OSError, ValueError) as exc:
        raise _load_error(model, exc, local) from None


def _unreachable_error(model: TransformersModel, why: str) -> BackendError:
    mid = model.model_id
    return BackendError(
        model.redact(
            f"'{mid}' is not in the local Hugging Face cache and the Hub is unreachable ({why}). "
            f"Fix: connect to the network and retry (it downloads once), e.g. `hf download {mid}`; "
            f"or set model.model_id to a local directory holding the weights; or use "
            f"model.model_id=builtin:tiny-llama, which ships with modelfactory."
        ),
        model_id=mid,
        backend=type(model).__name__,
    )


def _load_error(model: TransformersModel, exc: Exception, local: bool) -> BackendError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    mid = model.model_id
    if local:
        message = f"cannot load the model directory {model.spec.source()!r}: {first}"
    elif hub_offline():
        message = (
            f"'{mid}' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it. "
            f"Fix: run once online (unset HF_HUB_OFFLINE) to download it, e.g. "
            f"`hf download {mid}`; or set model.model_id to a local directory holding the weights; "
            f"or use model.model_id=builtin:tiny-llama, which ships with modelfactory. "
            f"(transformers said: {first})"
        )
    else:
        message = (
            f"cannot load '{mid}' from the Hugging Face Hub or the local cache ({first}). "
            f"Fix: check the id and the network (gated models need HF_TOKEN); offline, download it "
            f"first and set HF_HUB_OFFLINE=1, or set model.model_id to a local directory."
        )
    return BackendError(model.redact(message), model_id=mid, backend=type(model).__name__)


def resolve_device(model: TransformersModel, torch: Any) -> Any:
    """The torch device ``model.device`` names (``auto``: CUDA if present), or a clear error."""
    wanted = model.spec.device
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    elif wanted.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(
            f"device {wanted!r} was asked for but torch sees no CUDA GPU (set model.device=cpu or auto)",
            model_id=model.model_id,
            backend=type(model).__name__,
        )
    elif wanted.startswith("cuda:") and int(wanted[5:]) >= torch.cuda.device_count():
        raise BackendError(
            f"device {wanted!r} was asked for but torch sees {torch.cuda.device_count()} GPU(s) "
            "(numbered from 0)",
            model_id=model.model_id,
            backend=type(model).__name__,
        )
    elif wanted == "mps" and not torch.backends.mps.is_available():
        raise BackendError(
            "device 'mps' was asked for but is not available (set model.device=cpu or auto)",
            model_id=model.model_id,
            backend=type(model).__name__,
        )
    return torch.device(wanted)


def import_backend(backend: str) -> tuple[Any, Any]:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "transformers", backend) from None
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("transformers", "transformers", backend) from None
    return torch, transformers


@contextlib.contextmanager
def quiet_loading(transformers: Any, local: bool) -> Iterator[None]:
    """Hide the "Loading weights" bar for local files; keep it (and download bars) for hub ids."""
    logging = transformers.utils.logging
    if not local or not logging.is_progress_bar_enabled():
        yield
        return
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.enable_progress_bar()
