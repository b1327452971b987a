"""The scorer families, one module each; importing this package registers them all."""

from . import choice, code, exact, includes, json_schema, model_graded, numeric, pattern

__all__ = ["choice", "code", "exact", "includes", "json_schema", "model_graded", "numeric", "pattern"]
