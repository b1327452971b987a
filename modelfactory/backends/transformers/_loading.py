"""Loading: torch and transformers imported (naming the extra when missing), the device chosen, then the
tokenizer and weights read from wherever ``model_id`` points, with errors that say how to fix them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ...errors import BackendError, MissingDependencyError
from ._gguf import GgufWeights, converted_dir
from ._prompt_cache import cache_kwarg
from ._sources import HUB_KWARGS, hub_offline, hub_unreachable, in_hub_cache
from ._spec import TransformersSpec
from ._threads import import_torch
from ._vision import load_vision
from ._weights import Runtime

__all__ = ["Loadable", "import_backend", "load_runtime", "quiet_loading", "resolve_device"]


class Loadable(Protocol):
    """What loading reads of the model (``TransformersModel``; named here by what it offers, so this
    module never imports ``_model``, which imports it)."""

    spec: TransformersSpec

    @property
    def model_id(self) -> str: ...

    def redact(self, text: str) -> str: ...

    def _dtype(
        self, torch: Any, transformers: Any, device: Any, source: str, config_kwargs: dict[str, Any]
    ) -> tuple[Any, str]: ...


@dataclass
class _Source:
    """Where the tokenizer and weights are read from, and with which hub arguments."""

    path: str
    local: bool
    hub_kwargs: dict[str, Any]
    model_kwargs: dict[str, Any]
    gguf: GgufWeights | None = None  # a GGUF model: its dequantized copy, read as a local directory


def load_runtime(model: Loadable, key: tuple[Any, ...]) -> Runtime:
    """Load ``model``'s tokenizer and weights (``key``: its weight-cache key), or raise a clear error."""
    start = time.perf_counter()
    torch, transformers = import_backend(type(model).__name__)
    device = resolve_device(model, torch)
    src = _source(model, transformers)
    tokenizer, weights, processor, reason = _read(model, src, torch, transformers, device)
    weights.to(device)
    weights.eval()
    eos_ids, pad_id = _special_ids(weights, tokenizer)
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
        gguf=src.gguf,
        processor=processor,
    )


def _source(model: Loadable, transformers: Any) -> _Source:
    """Where to read from: a local directory, the hub (offline when it must be: cached, or no network),
    or the dequantized copy of a GGUF file (converted on first use)."""
    spec = model.spec
    path = spec.source()
    local = Path(path).is_dir()
    hub_kwargs: dict[str, Any] = {"revision": spec.revision}
    hub_kwargs.update({k: spec.model_kwargs[k] for k in HUB_KWARGS if k in spec.model_kwargs})
    if not local and not hub_kwargs.get("local_files_only"):
        if hub_offline():
            hub_kwargs["local_files_only"] = True
        else:
            unreachable = hub_unreachable()
            if unreachable is not None:
                if not in_hub_cache(path, spec.revision, hub_kwargs.get("cache_dir")):
                    raise _unreachable_error(model, unreachable)
                hub_kwargs["local_files_only"] = True  # cached: load it without the Hub
    gguf = spec.gguf()
    if gguf is None:
        return _Source(path, local, hub_kwargs, spec.model_kwargs)
    # read (or first write) the dequantized copy: a plain local model directory
    converted = converted_dir(
        transformers,
        _gguf_path(path, gguf, local, hub_kwargs, transformers, model),
        backend=type(model).__name__,
        model_id=model.model_id,
    )
    model_kwargs = {k: v for k, v in spec.model_kwargs.items() if k not in HUB_KWARGS}
    return _Source(converted.directory, True, {}, model_kwargs, converted)


def _read(
    model: Loadable, src: _Source, torch: Any, transformers: Any, device: Any
) -> tuple[Any, Any, Any, str]:
    """The tokenizer, the weights, a vision-language model's processor (or None), and why this dtype."""
    trust = model.spec.trust_remote_code
    try:
        with quiet_loading(transformers, src.local):
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                src.path, trust_remote_code=trust, **src.hub_kwargs
            )
            dtype, reason = model._dtype(torch, transformers, device, src.path, src.hub_kwargs)
            weights_kwargs = {**src.model_kwargs, **src.hub_kwargs}
            # a vision-language model first, as smolagents does (not for a GGUF: those are causal LMs)
            vision = None
            if src.gguf is None:
                vision = load_vision(transformers, src.path, dtype, trust, weights_kwargs, src.hub_kwargs)
            if vision is not None:
                return tokenizer, vision[1], vision[0], reason
            weights = transformers.AutoModelForCausalLM.from_pretrained(
                src.path, dtype=dtype, trust_remote_code=trust, **weights_kwargs
            )
            return tokenizer, weights, None, reason
    except (OSError, ValueError) as exc:
        raise _load_error(model, exc, src.local) from None


def _special_ids(weights: Any, tokenizer: Any) -> tuple[frozenset[int], int | None]:
    """The end-of-sequence ids (the generation config's, else the tokenizer's) and the padding id."""
    eos = weights.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = weights.generation_config.pad_token_id
    if pad_id is None and eos_ids:
        pad_id = min(eos_ids)
    return eos_ids, pad_id


def _gguf_path(
    source: str,
    gguf: str,
    local: bool,
    hub_kwargs: dict[str, Any],
    transformers: Any,
    model: Loadable,
) -> Path:
    """The GGUF file on this machine: in the local directory, or fetched from (or found in the cache of)
    the hub repo ``source``."""
    if local:
        return Path(source) / gguf
    try:
        return Path(transformers.utils.cached_file(source, gguf, **hub_kwargs))
    except (OSError, ValueError) as exc:
        raise _load_error(model, exc, local) from None


def _unreachable_error(model: Loadable, why: str) -> BackendError:
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


def _load_error(model: Loadable, exc: Exception, local: bool) -> BackendError:
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


def resolve_device(model: Loadable, torch: Any) -> Any:
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
        torch = import_torch()  # with the OpenMP wait policy that holds under load (_threads)
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
