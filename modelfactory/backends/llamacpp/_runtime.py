"""Loaded llama.cpp models, shared per file and settings, each behind a lock; closed at exit."""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ...errors import MissingDependencyError
from .._local import WeightCache
from ._spec import _EXTRA

__all__ = ["WEIGHTS", "amx_build", "cached_llamas", "clear_cache", "no_amx_repack"]


@dataclass(eq=False)
class _Runtime:
    llama: Any  # llama_cpp.Llama; None once freed
    llama_cpp: Any  # the module
    formatter: Any  # llama_cpp.llama_chat_format.Jinja2ChatFormatter, or None without a template
    key: tuple[Any, ...]
    load_s: float = 0.0
    freed: bool = False
    # One call at a time on a Llama (not thread-safe). A plain Lock: a stream's consumer may pull it
    # from different worker threads (agenerate_stream), so the thread that releases may not be the owner.
    lock: threading.Lock = field(default_factory=threading.Lock)
    grammars: dict[str, Any] = field(default_factory=dict)  # checked GBNF text -> LlamaGrammar
    chars_per_token: int = 0  # the vocabulary's longest piece (_local.longest_token); 0: not read yet


def _release(rt: _Runtime, timeout: float = -1) -> None:
    """Close ``rt``'s Llama once no call holds it (``timeout`` s at most, -1: wait as long as it takes)."""
    if not rt.lock.acquire(timeout=timeout):
        return
    try:
        rt.freed = True
        llama, rt.llama = rt.llama, None
        if llama is not None:
            with contextlib.suppress(Exception):
                llama.close()
    finally:
        rt.lock.release()


WEIGHTS: WeightCache[_Runtime] = WeightCache(_release)
_atexit_registered = False


def clear_cache() -> int:
    """Free every loaded llama.cpp model; returns how many. Models load again on their next call."""
    return WEIGHTS.clear()


def _close_at_exit() -> None:
    """Close the loaded models at interpreter exit, skipping one still held by a call (never block exit)."""
    for rt in WEIGHTS.take_all():
        _release(rt, timeout=1.0)


def cached_llamas() -> list[dict[str, Any]]:
    """What is loaded: one dict per ``Llama`` (file, n_ctx, threads, GPU layers)."""
    return [
        {"path": k[0], "n_ctx": k[1], "n_threads": k[2], "n_gpu_layers": k[4], "load_s": rt.load_s}
        for k, rt in WEIGHTS.items()
    ]


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependencyError("llama_cpp", _EXTRA, "LlamaCppModel") from None
    return llama_cpp


def close_at_exit() -> None:
    """Close every Llama while the interpreter is whole (registered once, on the first load):
    Llama.__del__ at shutdown calls into already-torn-down modules and prints a TypeError traceback."""
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_close_at_exit)
        _atexit_registered = True


_PARAMS_LOCK = threading.Lock()


def amx_build(llama_cpp: Any) -> bool:
    """Whether this llama.cpp build uses Intel AMX (compiled for a CPU that has it, e.g. Sapphire Rapids)."""
    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


@contextlib.contextmanager
def no_amx_repack(llama_cpp: Any) -> Iterator[bool]:
    """While a ``Llama`` is built: on an AMX build, its weights stay in the plain CPU buffer (yields True).

    Why: llama.cpp's AMX buffer type repacks Q4/Q8 weights on load and then crashes the process in
    ``ggml_backend_amx_mul_mat`` at the first decode (SIGSEGV; llama-cpp-python 0.3.36 built on a Xeon with
    AMX: SmolLM2's Q4_1 file crashed every time; ggml-org/llama.cpp#20824, stanfordnlp/dspy#10079 saw it
    too). ``use_extra_bufts=False`` in the model params keeps them out of it; ``Llama()`` takes no such
    argument but reads its params from ``llama_model_default_params()``, wrapped here for the build only.
    Costs the CPU repacking of other builds on those machines; nothing changes elsewhere."""
    module = getattr(llama_cpp, "llama_cpp", None)
    original = getattr(module, "llama_model_default_params", None)
    if original is None or not amx_build(llama_cpp) or not hasattr(original(), "use_extra_bufts"):
        yield False
        return

    def params() -> Any:
        p = original()
        p.use_extra_bufts = False
        return p

    with _PARAMS_LOCK:  # one build at a time while the module's function is wrapped
        module.llama_model_default_params = params
        try:
            yield True
        finally:
            module.llama_model_default_params = original
