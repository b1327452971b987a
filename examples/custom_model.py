"""``fn: examples.custom_model.custom_model`` from a clone: the same function as
:mod:`modelfactory.examples.custom_model`, which ships in the package (the ``custom_callable`` config
points there, so it runs from an installed wheel too). Copy that file to start a model function of your own.
"""

from __future__ import annotations

from modelfactory.examples.custom_model import PREFIX, TAIL, custom_model

__all__ = ["PREFIX", "TAIL", "custom_model"]
