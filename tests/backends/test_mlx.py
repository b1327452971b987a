"""MLXModel off Apple silicon: the config validates, building it fails at once naming the platform."""

from __future__ import annotations

import pytest

from modelfactory import MLXModel
from modelfactory.backends.mlx import MLXSpec, mlx_platform_problem
from modelfactory.errors import ConfigError, UnsupportedFeatureError
from modelfactory.factory import validate_config

off_mac = pytest.mark.skipif(mlx_platform_problem() is None, reason="this is a Mac with Apple silicon")


def test_spec_validates_and_flattens_messages_by_default() -> None:
    spec = MLXSpec.from_kwargs({"model_id": "mlx-community/SmolLM2-135M-Instruct-8bit", "max_tokens": 5})
    assert spec.flatten_messages_as_text is True  # as smolagents' MLXModel
    with pytest.raises(ConfigError, match="no_such"):
        MLXSpec.from_kwargs({"model_id": "m", "no_such": 1})


@off_mac
def test_building_elsewhere_fails_naming_the_platform() -> None:
    with pytest.raises(UnsupportedFeatureError, match="macOS on Apple silicon"):
        MLXModel("mlx-community/SmolLM2-135M-Instruct-8bit")
    problems = validate_config({"_target_": "MLXModel", "model_id": "m"}, environment=True)
    assert len(problems) == 1 and "macOS on Apple silicon" in problems[0].problem
    assert "modelfactory[mlx]" in problems[0].fix
