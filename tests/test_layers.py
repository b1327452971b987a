"""The import graph of modelfactory: every module imports, no circle, no module importing a higher layer,
and no backend knowledge outside ``backends/`` (the registry's names aside).

Edges are read from the source (``ast``), so an import that only runs inside a function counts too;
``if TYPE_CHECKING:`` blocks do not (annotations only).
"""

from __future__ import annotations

import ast
import functools
import importlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "modelfactory"

# Bottom to top: a module may import its own layer or lower ones. A name matches a module or, with a
# trailing ".", every module below that package. An exact name wins; else the lowest matching prefix.
LAYERS: list[tuple[str, ...]] = [
    # leaves: the error tree, the secret policy, the registry's names, the fake server for users' tests,
    # the one ./.env loader
    (
        "modelfactory.errors",
        "modelfactory.clock",
        "modelfactory.secrets",
        "modelfactory.backends.registry",
        "modelfactory.testing",
        "modelfactory._envfile",
        "modelfactory.examples",  # the function the shipped custom_callable config runs
        "modelfactory.examples.",
    ),
    (
        "modelfactory.messages",
        "modelfactory.retry",
        "modelfactory.ratelimit",
        "modelfactory.generation",
        "modelfactory.tools",
    ),
    # what a spec is made of: the cache settings, prices, smolagents' names for its fields
    ("modelfactory.cache", "modelfactory.pricing", "modelfactory.aliases", "modelfactory.reasoning"),
    ("modelfactory.settings",),
    # the call contract, and the batch endpoint interface each backend may supply (Model.batch_adapter)
    (
        "modelfactory.model",
        "modelfactory._model_async",
        "modelfactory._smolagents_attrs",
        "modelfactory._signature",
        "modelfactory.capabilities",
        "modelfactory._batchapi",
    ),
    ("modelfactory.factory",),
    ("modelfactory.backends", "modelfactory.backends."),
    (
        "modelfactory._overrides",
        "modelfactory._runlock",
        "modelfactory.job",  # spec, items, strategies, budget, record, runner: a job's parts
        "modelfactory.job.",
        "modelfactory.jobmetrics",
        "modelfactory.batch",
        "modelfactory.batch.",
        "modelfactory.eval",  # scorers, metrics, compare, rescore: the runner will score rows with them
        "modelfactory.eval.",
    ),
    (
        "modelfactory.job.app",  # run_job: spec -> model -> runner -> record -> exit code
        "modelfactory.hydra_callbacks",
        "modelfactory.batch.sweep",  # a Hydra callback: collects a multirun's jobs with app.run_job
        "modelfactory.report",
        "modelfactory.merge",
        "modelfactory.tracking",
        "modelfactory.tracking.",
        "modelfactory.serve",
        "modelfactory.serve.",
        "modelfactory.conf",  # the shipped configs (package data; its __init__ makes it pkg://-readable)
        "modelfactory._config_dirs",  # the shipped configs with the user's config dir over them
        "modelfactory._hydra_app",  # `modelfactory run`: the Hydra app and its task function
        "modelfactory.cli",
    ),
    ("modelfactory",),  # the public namespace, above everything it exports
]

# Known exceptions, each with why it is there and what removes it. The tests fail on any new one.
# Function-level imports of a higher layer (none left):
KNOWN_UPWARD: set[tuple[str, str]] = set()
# Function-level edges within a layer that close a circle (none left):
KNOWN_CIRCLES: set[tuple[str, str]] = set()
# Backends imported from outside backends/: none left (each backend supplies its batch endpoint through
# Model.batch_adapter, so batch/ knows none of them).
KNOWN_BACKEND_IMPORTS: set[tuple[str, str]] = set()


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


MODULES = module_names()


def _source(name: str) -> Path:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(name: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The modelfactory modules an import statement in module ``name`` loads."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if node.level:
        package = name if _source(name).name == "__init__.py" else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    out = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in MODULES:  # `from . import _openai_wire`
            out.add(sub)
        elif base in MODULES:
            out.add(base)
    return out


@functools.cache
def _tree(name: str) -> ast.Module:
    """A module's parsed source, parsed once per test process (the graph is built ~10 times per run)."""
    return ast.parse(_source(name).read_text(encoding="utf-8"))


def edges(*, function_level: bool, annotations: bool = False) -> set[tuple[str, str]]:
    """(importer, imported) pairs; module level only, or also imports inside functions; with
    ``annotations``, also those of ``if TYPE_CHECKING:`` blocks."""
    found: set[tuple[str, str]] = set()
    for name in MODULES:
        tree = _tree(name)

        def visit(node: ast.AST, in_function: bool, name: str = name) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _is_type_checking(child) and not annotations:
                    for other in child.orelse:
                        visit(other, in_function)
                    continue
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)) and (function_level or not in_function):
                    found.update((name, t) for t in _targets(name, child) if t != name)
                visit(child, inner)

        visit(tree, False)
    return found


def cycle(graph: set[tuple[str, str]]) -> list[str] | None:
    """One circle in the graph, as the modules along it, or None."""
    succ: dict[str, list[str]] = {}
    for a, b in sorted(graph):
        succ.setdefault(a, []).append(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in succ.get(node, []):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(succ):
        if start not in state and (found := walk(start)):
            return found
    return None


def layer(module: str) -> int:
    for i, names in enumerate(LAYERS):  # a module named exactly wins over its package's prefix
        if module in names:
            return i
    for i, names in enumerate(LAYERS):
        for n in names:
            if n.endswith(".") and module.startswith(n):
                return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_the_graph_sees_known_edges() -> None:
    graph = edges(function_level=True)
    assert ("modelfactory.model", "modelfactory.cache") in graph
    assert ("modelfactory.backends.azure", "modelfactory.backends.openai") in graph
    assert ("modelfactory.backends.openai", "modelfactory.backends._openai_wire") in graph  # from . import
    assert ("modelfactory.backends.fallback", "modelfactory.factory") in graph  # inside a function
    assert ("modelfactory.backends.fallback", "modelfactory.factory") not in edges(function_level=False)
    assert cycle({("a", "b"), ("b", "c"), ("c", "a")}) == ["a", "b", "c", "a"]
    assert cycle({("a", "b"), ("a", "c"), ("b", "c")}) is None


def test_no_circle_at_module_level() -> None:
    assert cycle(edges(function_level=False)) is None


def test_no_circle_even_through_annotation_only_imports() -> None:
    """A module that names another's class only in annotations (``if TYPE_CHECKING:``) while that one
    imports it is still a circle of knowledge (``transformers._loading`` <-> ``_model`` was one): the
    helper names what it needs as a Protocol, or takes the values themselves."""
    graph = edges(function_level=True, annotations=True)
    assert ("modelfactory.model", "modelfactory._batchapi") in graph - edges(function_level=True)
    assert cycle(graph - KNOWN_CIRCLES - KNOWN_UPWARD) is None


def test_every_known_exception_still_exists() -> None:
    """An exception whose import is gone must leave its list, so the lists only ever shrink."""
    graph = edges(function_level=True)
    assert (KNOWN_UPWARD | KNOWN_CIRCLES | KNOWN_BACKEND_IMPORTS) - graph == set()


def test_no_circle_through_function_level_imports() -> None:
    assert cycle(edges(function_level=True) - KNOWN_CIRCLES - KNOWN_UPWARD) is None


def test_no_module_imports_a_higher_layer() -> None:
    bad = [(a, b) for a, b in sorted(edges(function_level=True) - KNOWN_UPWARD) if layer(b) > layer(a)]
    assert bad == [], "imports from a higher layer: " + ", ".join(f"{a} -> {b}" for a, b in bad)


def test_no_backend_knowledge_outside_backends() -> None:
    """Only backends import backends; everyone else knows them by the registry's names."""
    inside = "modelfactory.backends."
    bad = [
        (a, b)
        for a, b in sorted(edges(function_level=True) - KNOWN_BACKEND_IMPORTS)
        if b.startswith(inside) and b != "modelfactory.backends.registry" and not a.startswith(inside)
    ]
    assert bad == []


def _backend(module: str) -> str:
    """The backend a module belongs to: ``openai`` for backends/openai.py, ``transformers`` for every
    module of a backends/transformers/ package."""
    return module.split(".")[2] if module.count(".") >= 2 else ""


def test_no_backend_imports_another_backends_private_names() -> None:
    """Shared plumbing lives in a private module (``_api``, ``_openai_wire``), not inside one backend."""
    bad = []
    for name in MODULES:
        if not name.startswith("modelfactory.backends."):
            continue
        for node in ast.walk(_tree(name)):
            if not isinstance(node, ast.ImportFrom):
                continue
            for target in _targets(name, node):
                shared = _backend(target).startswith("_") or target == "modelfactory.backends.registry"
                if (
                    target.startswith("modelfactory.backends.")
                    and not shared
                    and _backend(target) != _backend(name)
                ):
                    bad += [f"{name}: {a.name} from {target}" for a in node.names if a.name.startswith("_")]
    assert bad == []


# Names that moved to break a circle or an upward import, still importable where users found them:
# (old module, name, the module that owns it now).
MOVED = [
    ("modelfactory.hydra_callbacks", "collect_jobs", "modelfactory.job.record"),
    ("modelfactory.tracking", "TrackingCallback", "modelfactory.tracking.callback"),  # conf/config.yaml's
    ("modelfactory.tracking", "make_tracker", "modelfactory.tracking.callback"),
    ("modelfactory.backends.transformers", "tools_block", "modelfactory.backends._local"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_moved_names_keep_their_old_import_path(old: str, name: str, new: str) -> None:
    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)


README = PACKAGE.parent / "README.md"


def _readme_rows() -> list[list[str]]:
    """The names in backticks of the modules column of each row of the README's architecture table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Architecture (what each module owns)", 1)[1].split("\n#", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| ")]
    return [re.findall(r"`([^`]+)`", cells[2]) for cells in rows[1:]]  # rows[0]: the header


def _readme_module(name: str) -> str:
    return "modelfactory" + "".join(
        "." + part for part in name.strip("/").split("/") if part != "modelfactory"
    )


def test_the_readme_architecture_table_matches_the_tree_and_the_layers() -> None:
    """One row per layer, bottom to top; every module (or its package) in the row of its layer, and
    no name that is not a module."""
    rows = _readme_rows()
    assert len(rows) == len(LAYERS)
    row_of: dict[str, int] = {}
    for i, names in enumerate(rows):
        for name in names:
            module = _readme_module(name)
            assert module in MODULES, f"README's architecture names {name!r}: no such module"
            row_of[module] = i
    for module in MODULES:
        listed = max((m for m in row_of if module == m or module.startswith(m + ".")), key=len)
        assert row_of[listed] == layer(module), (
            f"{module}: README's architecture table has it in row {row_of[listed] + 1} ({listed}), "
            f"LAYERS in layer {layer(module) + 1}"
        )
