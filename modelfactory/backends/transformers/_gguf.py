"""GGUF files for transformers: dequantized once, then kept on disk as a plain safetensors model directory.

transformers reads a GGUF file by dequantizing every tensor (and rebuilding the tokenizer from the GGUF's
vocabulary): ~40 s for SmolLM2-135M on a busy 2-core machine, on every load. The result is an ordinary
float32 model, so it is saved once (``model.safetensors``, config, tokenizer, chat template) under
``$XDG_CACHE_HOME/modelfactory/gguf/<sha256 of the file>-transformers-<version>/`` and later loads read
that directory in about a second, without ``gguf`` or ``accelerate``. The directory is written under a
temporary name and renamed into place, so a crash or a concurrent load never leaves a half-written copy;
a lock file beside it makes a concurrent load wait for that copy rather than dequantize the file again.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import BackendError, MissingDependencyError

__all__ = [
    "MANIFEST",
    "publish",
    "GgufWeights",
    "cache_root",
    "converted_dir",
    "converted_path",
    "file_sha256",
    "lock_path",
]

log = logging.getLogger("modelfactory.transformers")

MANIFEST = "modelfactory-gguf.json"  # written last inside the directory: what it was converted from
_EXTRA = "gguf"
_digests: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class GgufWeights:
    """Where a GGUF model's weights were read from on this load."""

    gguf_file: str  # the GGUF file
    directory: str  # the converted safetensors directory the weights were loaded from
    converted: bool  # True: this load dequantized the file (and wrote ``directory``); False: read it
    convert_s: float = 0.0


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/modelfactory/gguf`` (``~/.cache/modelfactory/gguf`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelfactory" / "gguf"


def file_sha256(path: Path) -> str:
    """The file's sha256, remembered per (path, size, mtime) for the life of the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _digests.get(key)
    if digest is None:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = _digests[key] = h.hexdigest()
    return digest


def converted_path(gguf_path: Path, transformers_version: str | None) -> Path:
    """Where ``gguf_path`` dequantized by this transformers version is (or will be) kept. ``None``: the
    installed version, read without importing transformers."""
    if transformers_version is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            transformers_version = version("transformers")
        except PackageNotFoundError:
            transformers_version = "none"
    return cache_root() / f"{file_sha256(gguf_path)}-transformers-{transformers_version}"


def converted_dir(transformers: Any, gguf_path: Path, *, backend: str, model_id: str) -> GgufWeights:
    """The safetensors directory holding ``gguf_path`` dequantized, converting it first if need be."""
    final = converted_path(gguf_path, transformers.__version__)
    if (final / MANIFEST).is_file():
        return GgufWeights(str(gguf_path), str(final), converted=False)
    for package in ("gguf", "accelerate"):  # transformers needs both to read a GGUF file
        try:
            importlib.import_module(package)
        except ImportError:
            raise MissingDependencyError(package, _EXTRA, backend) from None
    with one_converter(final, backend, model_id):
        if (final / MANIFEST).is_file():  # another process converted it while this one waited
            return GgufWeights(str(gguf_path), str(final), converted=False)
        start = time.perf_counter()
        log.warning(
            "dequantizing %s once (tens of seconds on a CPU); later loads read the safetensors in %s",
            gguf_path.name,
            final,
        )

        def write(tmp: Path) -> dict[str, Any]:
            _convert(transformers, gguf_path, tmp, backend=backend, model_id=model_id)
            return {
                "gguf_file": str(gguf_path),
                "sha256": final.name.split("-", 1)[0],
                "transformers": transformers.__version__,
                "dtype": "float32",
                "convert_s": round(time.perf_counter() - start, 1),
            }

        publish(final, MANIFEST, write, lambda exc: _cache_error(exc, final, backend, model_id))
        return GgufWeights(str(gguf_path), str(final), converted=True, convert_s=time.perf_counter() - start)


def publish(
    final: Path,
    manifest_name: str,
    write: Callable[[Path], dict[str, Any]],
    cache_error: Callable[[OSError], Exception],
) -> dict[str, Any]:
    """Make the converted directory ``final`` whole or not at all: ``write(tmp)`` fills a fresh directory
    beside it and returns the manifest, written last (as ``manifest_name``), then the directory is renamed
    into place (atomic; another process's copy renamed first wins). A write error is ``cache_error``'s."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    except OSError as exc:
        raise cache_error(exc) from None
    try:
        manifest = write(tmp)
        (tmp / manifest_name).write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            os.rename(tmp, final)  # atomic; fails if another process renamed its copy first
        except OSError:
            if not (final / manifest_name).is_file():
                raise
    except OSError as exc:
        raise cache_error(exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def lock_path(final: Path) -> Path:
    """The lock file of a converted directory: apart, in ``.locks/`` (empty files, left in place: removing
    a lock file another process may be about to take is a race)."""
    return final.parent / ".locks" / f"{final.name}.lock"


@contextlib.contextmanager
def one_converter(final: Path, backend: str, model_id: str) -> Iterator[None]:
    """Held while converting ``final``: a second process (a sweep's jobs starting together on a fresh
    machine, parallel test workers) waits for the first one's copy instead of dequantizing the same file
    beside it, tens of CPU-seconds each. Where there is no ``fcntl`` (Windows) both convert; the atomic
    rename keeps one copy."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        lock_path(final).parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock_path(final), "a+b")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise _cache_error(exc, final, backend, model_id) from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for another process that is dequantizing the same file into %s", final)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _convert(transformers: Any, gguf_path: Path, out: Path, *, backend: str, model_id: str) -> None:
    """Dequantize ``gguf_path`` (tokenizer and model) to float32 and save both into ``out``."""
    import torch

    source, name = str(gguf_path.parent), gguf_path.name
    try:
        with _parsed_once():
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, gguf_file=name)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                source, gguf_file=name, dtype=torch.float32
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendError(
            f"cannot read the GGUF file {str(gguf_path)!r} with transformers {transformers.__version__}: "
            f"{first}. Fix: check that it is a GGUF model of an architecture transformers supports; or "
            "run it with the llama.cpp backend.",
            model_id=model_id,
            backend=backend,
        ) from None
    # Dequantized, the model is plain float32 tensors: drop the GGUF quantizer that blocks saving it.
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    del model
    gc.collect()


@contextlib.contextmanager
def _parsed_once() -> Iterator[None]:
    """transformers 5 parses the whole GGUF file with ``gguf.GGUFReader`` at each step of a conversion (the
    tokenizer's config, the model's config, the weights): three parses of SmolLM2-135M's 49,152-token
    vocabulary, each ~3 CPU-seconds of Python. While this is held, a file is parsed once and that reader
    (read-only, memory-mapped) serves every later step: a conversion took 12.5 CPU-s instead of 19.4.

    Likewise transformers' ``get_gguf_hf_weights_map`` walks every submodule of the model (397 for
    SmolLM2-135M) and builds ``gguf.get_tensor_name_map(arch, n_layers)`` anew in each: the same name map,
    ~14 ms of Python each, ~5 of the conversion's CPU-seconds. Here it is built once per (arch, layers);
    nothing mutates a ``TensorNameMap`` after it is built.

    And the one parse is itself faster over a plain array: ``GGUFReader`` slices its ``np.memmap`` for every
    string of the vocabulary and merges (~1.3 million slices for SmolLM2), and each slice of a memmap runs
    ``memmap.__array_finalize__`` in Python. A read-only reader here parses a plain ``ndarray`` view of the
    same mapping (:func:`plain_array_reader`): the same bytes, still memory-mapped, and the parse took
    ~1 s instead of ~3 (the conversion ~6.5 s instead of ~9 on the 2-core Xeon)."""
    gguf: Any = importlib.import_module("gguf")
    original, original_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    fast = plain_array_reader(original)
    readers: dict[tuple[str, str], Any] = {}
    name_maps: dict[tuple[Any, int], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = (fast if mode == "r" else original)(path, mode)
        return readers[key]

    def name_map(arch: Any, n_blocks: int) -> Any:
        if (arch, n_blocks) not in name_maps:
            name_maps[arch, n_blocks] = original_name_map(arch, n_blocks)
        return name_maps[arch, n_blocks]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original, original_name_map
        readers.clear()
        name_maps.clear()


def plain_array_reader(reader_class: Any) -> Any:
    """A subclass of ``gguf.GGUFReader`` (``reader_class``) whose ``data`` is a plain ``ndarray`` view of
    the ``np.memmap`` it opens: every field and tensor it builds is then a plain array over the same mapped
    bytes, sliced without ``memmap``'s per-slice Python hook. For reading (mode ``r``) only: a memmap's
    ``flush`` is not reachable through the view."""
    import numpy as np

    class PlainArrayReader(reader_class):  # type: ignore[misc,valid-type]
        @property
        def data(self) -> Any:
            return self._plain_data

        @data.setter
        def data(self, value: Any) -> None:
            self._plain_data = value.view(np.ndarray) if isinstance(value, np.memmap) else value

    PlainArrayReader.__name__ = PlainArrayReader.__qualname__ = f"PlainArray{reader_class.__name__}"
    return PlainArrayReader


def _cache_error(exc: OSError, final: Path, backend: str, model_id: str) -> BackendError:
    return BackendError(
        f"cannot write the dequantized GGUF weights to {str(final)!r}: {exc}. Fix: free disk space (about "
        "4 bytes per parameter), or point XDG_CACHE_HOME at a writable directory.",
        model_id=model_id,
        backend=backend,
    )
