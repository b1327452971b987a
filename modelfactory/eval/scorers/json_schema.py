"""``json``: the reply is (or holds, in a fenced block) valid JSON; with a schema (the item's
``schema_field`` first, then the config's ``schema``), the JSON also validates against it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from ...errors import MissingDependencyError
from ..score import Score, ScoreFn, ScorerConfig, scorer
from ._text import one_line

_FENCE = re.compile(r"```(?:json)?\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def _validator_for(schema: Mapping[str, Any]) -> Any:
    try:
        import jsonschema
    except ImportError as exc:  # pragma: no cover - jsonschema ships with the eval extra
        raise MissingDependencyError("jsonschema", "eval", "the json scorer") from exc
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def parse_json(text: str) -> tuple[Any, str | None]:
    """The JSON value in ``text`` (the whole text, a fenced block, or the first object/array in it)."""
    candidates = [text.strip()] + [m.group(1).strip() for m in _FENCE.finditer(text)]
    for candidate in candidates:
        try:
            return json.loads(candidate), None
        except ValueError:
            pass
    decoder = json.JSONDecoder()
    for m in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, m.start())
            return value, None
        except ValueError:
            continue
    return None, f"no valid JSON in {one_line(text)!r}"


class JsonConfig(ScorerConfig):
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema", description="a JSON Schema every reply must match (optional)"
    )
    schema_field: str = Field(default="schema", description="the item field holding a per-item schema")

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            import jsonschema

            try:
                _validator_for(value)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value


@scorer("json", config=JsonConfig, needs_target=False)
def json_valid(cfg: JsonConfig) -> ScoreFn:
    default = _validator_for(cfg.schema_) if cfg.schema_ is not None else None

    def score(reply: str | None, item: Mapping[str, Any]) -> Score:
        value, problem = parse_json(reply or "")
        if problem is not None:
            return Score(0.0, answer=None, explanation=problem)
        answer = json.dumps(value, ensure_ascii=False, sort_keys=True)
        schema = item.get(cfg.schema_field)
        try:
            validator = _validator_for(schema) if isinstance(schema, Mapping) else default
        except Exception as exc:  # noqa: BLE001 - jsonschema.SchemaError: the item's schema is broken
            return Score.failed(f"item {item.get('id')!r}: invalid schema: {getattr(exc, 'message', exc)}")
        if validator is None:
            return Score(1.0, answer=answer, explanation="valid JSON")
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(root)"
            return Score(0.0, answer=answer, explanation=f"schema: at {where}: {one_line(errors[0].message)}")
        return Score(1.0, answer=answer, explanation="valid JSON matching the schema")

    return score
