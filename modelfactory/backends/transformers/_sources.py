"""Where the files of a ``model_id`` come from: a built-in asset directory, a local directory, a GGUF file
(by path, or ``pkg:<package>/<file>`` inside an installed Python package), or the Hub (and whether the
Hub can be reached at all, so an offline machine fails in seconds, not minutes)."""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .._package_file import is_package_ref, resolve_package_file

__all__ = [
    "ASSETS",
    "BUILTIN_MODELS",
    "BUILTIN_PREFIX",
    "HUB_KWARGS",
    "builtin_path",
    "gguf_ref",
    "hub_offline",
    "hub_unreachable",
    "in_hub_cache",
    "looks_like_path",
]

ASSETS = Path(__file__).resolve().parents[2] / "assets"
# ``builtin:<name>`` -> directory under modelfactory/assets (built by scripts/build_tiny_model.py).
BUILTIN_MODELS: dict[str, str] = {"tiny-llama": "tiny-llama"}
BUILTIN_PREFIX = "builtin:"
# from_pretrained arguments about *where* files come from: the tokenizer needs them as much as the model.
HUB_KWARGS = ("cache_dir", "token", "local_files_only", "force_download", "proxies", "subfolder")
_TRUE = {"1", "true", "yes", "on"}
_HUB_PROBE_TIMEOUT_S = 3.0


def builtin_path(model_id: str) -> Path | None:
    """The asset directory of a ``builtin:<name>`` id, or ``None`` for any other id."""
    if not model_id.startswith(BUILTIN_PREFIX):
        return None
    return ASSETS / BUILTIN_MODELS[model_id[len(BUILTIN_PREFIX) :]]


def looks_like_path(model_id: str) -> bool:
    return model_id.startswith(("/", "./", "../", "~")) or os.path.isabs(model_id)


def gguf_ref(model_id: str) -> Path | None:
    """The GGUF file ``model_id`` itself names (``pkg:<package>/<file>`` resolved, or a ``.gguf`` path),
    or ``None`` when it names a directory, a built-in or a hub repo. Raises the resolver's
    :class:`~modelfactory.errors.ConfigError` (key ``model_id``) for a missing package or file."""
    if is_package_ref(model_id):
        return resolve_package_file(model_id, key="model_id")
    if looks_like_path(model_id) and model_id.lower().endswith(".gguf"):
        return Path(model_id).expanduser()
    return None


def hub_offline() -> bool:
    """Read at call time: huggingface_hub reads HF_HUB_OFFLINE only once, when it is first imported."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


_hub_probe: dict[str, tuple[float, str | None]] = {}


def hub_unreachable() -> str | None:
    """Why the Hub cannot be reached (a TCP connect to it, or to the proxy, in <= 3 s), or ``None``.

    huggingface_hub retries a failed request five times with back-off (~50 s per file when the machine
    is offline): checking the connection first lets a missing model fail in seconds instead.
    """
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    proxies = urllib.request.getproxies()  # *_proxy / *_PROXY, as httpx and requests read them
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        purl = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = purl.hostname or host, purl.port or 8080
    target = f"{host}:{port}"
    cached = _hub_probe.get(target)
    if cached is not None and time.monotonic() - cached[0] < 30:
        return cached[1]
    try:
        with socket.create_connection((host, port), timeout=_HUB_PROBE_TIMEOUT_S):
            reason = None
    except OSError as exc:
        reason = f"cannot connect to {target}: {exc}"
    _hub_probe[target] = (time.monotonic(), reason)
    return reason


def in_hub_cache(repo_id: str, revision: str | None, cache_dir: Any) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir, revision=revision)
    except Exception:
        return False
    return isinstance(found, str)
