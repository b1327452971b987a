"""The public API: ``modelfactory.__all__`` (exactly these names, each importable) and the public modules
(every other top-level module or subpackage is ``_``-prefixed: an internal, free to move).

A new public name or module is a decision: add it here, and to README's architecture section.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import modelfactory

PACKAGE = Path(modelfactory.__file__).resolve().parent

PUBLIC_NAMES = {
    "__version__",
    # the call contract and its messages
    "Model",
    "GenerationRequest",
    "ChatMessage",
    "ChatMessageStreamDelta",
    "MessageRole",
    "TokenUsage",
    "ToolCall",
    "ToolCallFunction",
    # the error tree
    "ModelFactoryError",
    "ConfigError",
    "BackendError",
    "CacheMissError",
    "MessageError",
    "MissingDependencyError",
    "UnsupportedFeatureError",
    "Problem",
    # a model from a config
    "build_model",
    "validate_config",
    # the backends (backends/registry.py)
    "TransformersModel",
    "HfApiModel",
    "InferenceClientModel",
    "LiteLLMModel",
    "OpenAIServerModel",
    "OpenAIModel",
    "AzureOpenAIServerModel",
    "AzureOpenAIModel",
    "CallableModel",
    "FallbackModel",
    "LlamaCppModel",
    "AmazonBedrockModel",
    "LiteLLMRouterModel",
    "VLLMModel",
    "MLXModel",
    "OpenVINOModel",
    "OpenAIResponsesModel",
    # jobs from Python: items in, rows out, and the reports over them
    "run_items",
    "RunStats",
    "load_dataset",
    "write_report",
    "compare_sweeps",
    # prices
    "Price",
    "price_for",
    "cost_usd",
}

# The top-level modules and subpackages a user may import. Everything else is `_`-prefixed.
PUBLIC_MODULES = {
    # library: a model object from a config (DESIGN.md's "library" list)
    "errors",
    "messages",
    "secrets",
    "settings",
    "model",
    "retry",
    "ratelimit",
    "cache",
    "pricing",
    "capabilities",
    "reasoning",  # the reasoning_effort map, as capabilities is the stop map
    "aliases",
    "generation",
    "tools",
    "clock",
    "factory",
    "backends",
    # app: jobs, runs, records, serving, the CLI
    "conf",  # the shipped configs (package data, pkg://modelfactory.conf)
    "examples",  # what conf/model/custom_callable.yaml's `fn` names
    "job",
    "eval",
    "batch",
    "serve",
    "report",
    "merge",
    "jobmetrics",
    "tracking",
    "hydra_callbacks",  # conf/config.yaml's callbacks name it
    "testing",
    "cli",
}


def top_level_modules(package: Path = PACKAGE) -> set[str]:
    """A package's top-level modules and subpackages (a folder without ``__init__.py`` is data)."""
    names = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    names |= {p.parent.name for p in package.glob("*/__init__.py")}
    return names


def test_all_is_exactly_the_public_names() -> None:
    assert set(modelfactory.__all__) == PUBLIC_NAMES
    assert len(modelfactory.__all__) == len(PUBLIC_NAMES)  # no name twice
    assert sorted(dir(modelfactory)) == sorted(PUBLIC_NAMES)


def test_every_public_name_imports() -> None:
    """In a fresh process, so that this worker's ``sys.modules`` stays as other tests expect it."""
    code = (
        "import json, modelfactory\n"
        "out = {}\n"
        "for name in modelfactory.__all__:\n"
        "    value = getattr(modelfactory, name)\n"
        "    exec(f'from modelfactory import {name} as imported')\n"
        "    assert imported is value, name\n"
        "    out[name] = getattr(value, '__module__', None) or type(value).__name__\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    modules = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(modules) == PUBLIC_NAMES
    # each exported object lives in a module of the package, none in an old path that no longer exists
    assert modules["run_items"] == "modelfactory.job.runner"
    assert modules["RunStats"] == "modelfactory.job.runner"
    assert modules["load_dataset"] == "modelfactory.job.items"
    for name, module in modules.items():
        if name != "__version__":
            assert module.startswith("modelfactory."), (name, module)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        modelfactory.run_job  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "run_job" in str(exc)
    else:
        raise AssertionError("modelfactory.run_job is not public API")


def test_every_public_looking_module_is_listed() -> None:
    """A new top-level module is private (``_name``) unless it is listed in PUBLIC_MODULES."""
    public_looking = {n for n in top_level_modules() if not n.startswith("_")}
    assert public_looking - PUBLIC_MODULES == set(), (
        "new public-looking top-level modules: prefix them with `_` (internal) or list them in "
        "PUBLIC_MODULES in tests/test_public_api.py and in README's architecture section"
    )
    assert PUBLIC_MODULES - public_looking == set(), "PUBLIC_MODULES lists modules that no longer exist"


def test_the_module_check_sees_a_new_module(tmp_path: Path) -> None:
    """The listing the check relies on: a module file and a subpackage are both seen, a data folder not."""
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "newthing.py").write_text("")
    (tmp_path / "_private.py").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "__init__.py").write_text("")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "weights.bin").write_text("")
    assert top_level_modules(tmp_path) == {"newthing", "_private", "sub"}
    assert "assets" not in top_level_modules()  # the tiny model's files: data, no __init__.py
