"""Checking a journey document against its JSON Schema, every mismatch as a `Problem`.

jsonschema's errors become the same problems the rest of Beacon reports: `loc` is the JSON path
of what is wrong (a missing or unknown key's own path), `type` one of `missing`,
`unknown_key`, `unknown_value`, `malformed`, `out_of_range`, `empty`.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from beacon.core.errors import Problem
from beacon.journeys.schema import journey_schema

_TYPE_NAMES = {
    "object": "a JSON object",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
}


@cache
def _validator() -> Draft202012Validator:
    schema = journey_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def shape_problems(document: Any) -> list[Problem]:
    """Return every way `document` departs from the journey schema, ordered by path."""
    found = [p for error in _validator().iter_errors(document) for p in _problems(error)]
    unique = {(p.loc, p.type, p.msg): p for p in found}
    return sorted(unique.values(), key=lambda p: [str(part) for part in p.loc])


def _problems(error: ValidationError) -> Iterator[Problem]:
    at = tuple(error.absolute_path)
    kind, schema, instance = error.validator, error.schema, error.instance
    expected: Any = error.validator_value
    if not isinstance(schema, dict):
        schema = {}
    if "propertyNames" in error.absolute_schema_path:
        what = schema.get("description", "a valid name")
        yield Problem((*at, str(instance)), f"{instance!r} is not {what}", "malformed")
    elif kind == "required":
        for name in expected:
            if isinstance(instance, dict) and name not in instance:
                yield Problem((*at, name), f"{name} is required", "missing")
    elif kind == "additionalProperties" and isinstance(instance, dict):
        known = sorted(schema.get("properties", {}))
        for key in instance:
            if key not in known:
                yield Problem(
                    (*at, key),
                    f"unknown key {key!r} here (known: {', '.join(known)})",
                    "unknown_key",
                )
    elif kind in ("enum", "const"):
        allowed = expected if kind == "enum" else [expected]
        choices = ", ".join(str(item) for item in allowed)
        yield Problem(at, f"{instance!r} is not one of {choices}", "unknown_value")
    elif kind == "type":
        wanted = _TYPE_NAMES.get(str(expected), "valid")
        yield Problem(at, f"must be {wanted}", "malformed")
    elif kind == "pattern":
        yield Problem(at, f"{instance!r} is not {schema.get('description', 'valid')}", "malformed")
    elif kind in ("minItems", "minProperties") and not instance:
        yield Problem(at, "must not be empty", "empty")
    elif kind in ("minimum", "maximum", "minLength", "maxLength", "minItems", "minProperties"):
        yield Problem(at, error.message, "out_of_range")
    else:
        yield Problem(at, error.message, "malformed")
