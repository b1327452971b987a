"""One backend registry: ``_target_`` names, the package's exports and the command-line guard read it."""

from __future__ import annotations

from pathlib import Path

import pytest

import modelfactory
from modelfactory._overrides import refusal_message
from modelfactory.backends.azure import AzureOpenAIServerSpec
from modelfactory.backends.callable import CallableSpec
from modelfactory.backends.hf_inference import HfApiSpec
from modelfactory.backends.litellm import LiteLLMSpec
from modelfactory.backends.openai import OpenAIServerSpec
from modelfactory.backends.registry import BACKENDS, backend_path
from modelfactory.factory import BACKENDS as FACTORY_BACKENDS
from modelfactory.factory import locate_target
from modelfactory.model import Model
from modelfactory.settings import ModelSpec


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_registered_name_is_a_target_and_an_export(name: str) -> None:
    cls, problems = locate_target(name)
    assert problems == [] and isinstance(cls, type) and issubclass(cls, Model)
    assert getattr(modelfactory, name) is cls
    assert name in modelfactory.__all__
    assert locate_target(f"modelfactory.{name}")[0] is cls


def test_factory_reads_the_same_registry() -> None:
    assert FACTORY_BACKENDS is BACKENDS


def test_backend_path_knows_registered_names_only() -> None:
    path = BACKENDS["OpenAIServerModel"]
    assert backend_path("OpenAIServerModel") == path
    assert backend_path("modelfactory.OpenAIServerModel") == path
    assert backend_path(path) == path
    assert backend_path("InferenceClientModel") == BACKENDS["HfApiModel"]
    assert backend_path("mypkg.OpenAIServerModel") is None  # a user's class of the same name
    assert backend_path("os.system") is None


@pytest.mark.parametrize(
    ("spec", "field", "config", "var"),
    [
        (OpenAIServerSpec, "api_key", {}, "OPENAI_API_KEY"),
        (OpenAIServerSpec, "api_key", {"api_base": "http://127.0.0.1:8000/v1"}, None),  # never sent there
        (AzureOpenAIServerSpec, "api_key", {}, "AZURE_OPENAI_API_KEY"),  # its env_field
        (AzureOpenAIServerSpec, "azure_endpoint", {}, "AZURE_OPENAI_ENDPOINT"),
        (HfApiSpec, "token", {}, "HF_TOKEN"),
        (LiteLLMSpec, "api_key", {}, None),  # the provider's own variable, decided by litellm
        (CallableSpec, "fn", {}, None),
        (ModelSpec, "no_such_field", {}, None),
    ],
)
def test_each_spec_names_the_env_var_that_feeds_a_field(
    spec: type[ModelSpec], field: str, config: dict[str, str], var: str | None
) -> None:
    assert spec.env_var_for(field, config) == var


def test_refusal_for_an_unregistered_target_imports_nothing(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("_target_: no_such_package.Model\nmodel_id: m\n")
    args = ["model=mine", "model.api_key=sk-typed"]
    text = refusal_message(["model.api_key"], args, tmp_path)
    assert "fix (any model)" in text and "fix (model=mine)" not in text and "sk-typed" not in text
