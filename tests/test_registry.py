"""One backend registry: ``_target_`` names and the package's exports read it."""

from __future__ import annotations

import pytest

import modelfactory
from modelfactory.backends.registry import BACKENDS, backend_path
from modelfactory.factory import BACKENDS as FACTORY_BACKENDS
from modelfactory.factory import locate_target
from modelfactory.model import Model


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
