"""Rules and computed attributes as PostgreSQL expressions, meaning what the pure core means.

Python (`comparisons`, `attribute_state`) is the reference; these translate it over jsonb:

- a property or trait path is read with `->` one key at a time (a list on the way is no
  value, as `values.lookup` says), JSON null is no value;
- a number is a JSON number or numeric text (`values.as_decimal`: trimmed, a decimal with an
  optional sign, fraction and exponent; here the exponent has at most 3 digits), an amount
  (`read_amount`) one under 10^18 in size rounded half to even to nine decimal places;
- `eq` compares two texts as text, two numbers or a number with numeric text as numbers;
  `contains` looks in text or among a list's items; order operators compare numbers;
- states are built as `attribute_state` writes them (tallies' numbers as their one text).

`Compiler` collects the query's parameters (`$n`) as it goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from beacon.core import jsonio
from beacon.segments.attributes import AttributeDefinition
from beacon.segments.comparisons import (
    ABSOLUTE,
    EQUALITY,
    FILTER_OPS,
    MEMBERSHIP,
    ORDER,
    PRESENCE,
    RELATIVE,
    Comparison,
)
from beacon.segments.filters import PropertyFilter
from beacon.segments.rules import (
    AllOf,
    AnyOf,
    AttributeCondition,
    ConsentCondition,
    EventCondition,
    IdentityCondition,
    Not,
    Rule,
    TraitCondition,
)
from beacon.segments.values import PropertyPath, as_decimal, read_time
from beacon.segments.windows import MINUTES_PER_DAY, bucket_width

SQL_KINDS = ("count", "sum", "average", "min", "max", "first_time", "last_time")
NUMBER_TEXT = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$"
WHITESPACE = "E' \\t\\n\\r\\x0b\\x0c'"
ISO = """'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'"""


class Compiler:
    """Builds SQL text with numbered parameters."""

    def __init__(self) -> None:
        self.args: list[Any] = []

    def arg(self, value: Any, cast: str = "") -> str:
        self.args.append(value)
        return f"${len(self.args)}{cast}"

    # --- values ---------------------------------------------------------------------------------

    def path(self, column: str, path: PropertyPath) -> str:
        """The jsonb at `path` in `column` (SQL NULL for no value or JSON null)."""
        found = column
        for part in path:
            found = f"({found} -> {self.arg(part, '::text')})"
        return f"NULLIF({found}, 'null'::jsonb)"

    @staticmethod
    def number(x: str) -> str:
        """The number a jsonb value holds (a JSON number or numeric text), else NULL."""
        text = f"btrim({x} #>> '{{}}', {WHITESPACE})"
        return (
            f"(CASE jsonb_typeof({x}) WHEN 'number' THEN ({x})::numeric"
            f" WHEN 'string' THEN CASE WHEN length({x} #>> '{{}}') <= 100"
            f" AND {text} ~ '{NUMBER_TEXT}' THEN {text}::numeric END END)"
        )

    def amount(self, x: str) -> str:
        """What sum, average, min and max read (`values.read_amount`), else NULL."""
        return self.rounded(self.number(x))

    @staticmethod
    def rounded(n: str) -> str:
        """A number as an amount: under 10^18 in size, rounded half to even to 9 places."""
        scaled = f"({n} * 1000000000)"
        half_even = (
            f"CASE WHEN abs({scaled} - trunc({scaled})) = 0.5 AND mod(trunc({scaled}), 2) = 0"
            f" THEN trunc({scaled}) / 1000000000 ELSE round({n}, 9) END"
        )
        return (
            f"(CASE WHEN abs({n}) < 1000000000000000000 THEN"
            f" CASE WHEN scale({n}) <= 9 THEN {n} ELSE {half_even} END END)"
        )

    # --- comparisons ----------------------------------------------------------------------------

    def equal(self, x: str, expected: Any) -> str:
        """`comparisons.equal(x, expected)` for a jsonb `x` (NULL: no value), never NULL."""
        if expected is None:
            return f"({x} IS NULL)"
        if isinstance(expected, bool):
            return f"COALESCE({x} = {self.arg(jsonio.dumps_text(expected), '::jsonb')}, false)"
        if isinstance(expected, str):
            same = self.arg(expected, "::text")
            text = f"(jsonb_typeof({x}) = 'string' AND {x} #>> '{{}}' = {same})"
            number = as_decimal(expected)
            if number is None:
                return f"COALESCE({text}, false)"
            bound = self.arg(number, "::numeric")
            as_number = f"(jsonb_typeof({x}) = 'number' AND ({x})::numeric = {bound})"
            return f"COALESCE({text} OR {as_number}, false)"
        number = as_decimal(expected)
        assert number is not None, expected
        return f"COALESCE({self.number(x)} = {self.arg(number, '::numeric')}, false)"

    def matches(self, x: str, comparison: Comparison) -> str:
        """`comparisons.matches` of a jsonb value, never NULL."""
        op, expected = comparison.op, comparison.value
        if op in PRESENCE:
            return f"({x} IS {'NOT ' if op == 'exists' else ''}NULL)"
        if op in EQUALITY:
            found = self.equal(x, expected)
            return found if op == "eq" else f"(NOT {found})"
        if op in MEMBERSHIP:
            found = "(" + " OR ".join(self.equal(x, item) for item in expected) + ")"
            return found if op == "in" else f"(NOT {found})"
        if op == "contains":
            inside = "(" + self.equal("NULLIF(item.v, 'null'::jsonb)", expected) + ")"
            listed = (
                f"(jsonb_typeof({x}) = 'array' AND EXISTS (SELECT 1 FROM"
                f" jsonb_array_elements({x}) AS item(v) WHERE {inside}))"
            )
            if isinstance(expected, str):
                part = self.arg(expected, "::text")
                text = f"(jsonb_typeof({x}) = 'string' AND strpos({x} #>> '{{}}', {part}) > 0)"
                return f"COALESCE({text} OR {listed}, false)"
            return f"COALESCE({listed}, false)"
        assert op in ORDER, op
        sign = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
        bound = self.arg(as_decimal(expected), "::numeric")
        return f"COALESCE({self.number(x)} {sign} {bound}, false)"

    def filters(self, where: Sequence[PropertyFilter]) -> list[str]:
        return [self.matches(self.path("e.properties", f.path), f.comparison) for f in where]

    def numeric(self, value: str, comparison: Comparison, *, never_null: bool = False) -> str:
        """A comparison of a number column (NULL: no value), as attributes compare numbers."""
        op, expected = comparison.op, comparison.value
        if op in PRESENCE:
            return f"({value} IS {'NOT ' if op == 'exists' else ''}NULL)"
        if op in EQUALITY or op in MEMBERSHIP:
            items = [expected] if op in EQUALITY else list(expected)
            found = (
                "("
                + " OR ".join(
                    f"COALESCE({value} = {self.arg(as_decimal(i), '::numeric')}, false)"
                    for i in items
                )
                + ")"
            )
            return found if op in ("eq", "in") else f"(NOT {found})"
        sign = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
        return f"COALESCE({value} {sign} {self.arg(as_decimal(expected), '::numeric')}, false)"

    def moment(self, value: str, comparison: Comparison, now: str) -> str:
        """A comparison of a time column (NULL: no value)."""
        op, expected = comparison.op, comparison.value
        if op in PRESENCE:
            return f"({value} IS {'NOT ' if op == 'exists' else ''}NULL)"
        if op in ABSOLUTE:
            sign = "<" if op == "before" else ">="
            return (
                f"COALESCE({value} {sign} {self.arg(read_time(expected), '::timestamptz')}, false)"
            )
        turn = f"({value} + {self.arg(int(expected) * 86400, '::int')} * interval '1 second')"
        sign = "<" if op == "within_days" else ">="
        return f"COALESCE({now} {sign} {turn}, false)"

    def turn(self, value: str, comparison: Comparison, now: str) -> str | None:
        """When a relative time comparison of a time column flips, if after now (else NULL)."""
        if comparison.op not in RELATIVE:
            return None
        turn = (
            f"({value} + {self.arg(int(comparison.value) * 86400, '::int')} * interval '1 second')"
        )
        return f"(CASE WHEN {turn} > {now} THEN {turn} END)"


def supported(definition: AttributeDefinition) -> bool:
    """Whether SQL computes this definition (distinct and last_value are left to Python)."""
    return definition.kind in SQL_KINDS


def condition_supported(rule: Rule) -> bool:
    """Whether every condition of `rule` has its SQL form."""
    if isinstance(rule, AllOf | AnyOf):
        return all(condition_supported(r) for r in rule.rules)
    if isinstance(rule, Not):
        return condition_supported(rule.rule)
    if isinstance(rule, TraitCondition):
        return rule.comparison.op in FILTER_OPS
    if isinstance(rule, AttributeCondition | EventCondition):
        return supported(rule.attribute)
    return isinstance(rule, ConsentCondition | IdentityCondition)


def bucket(definition: AttributeDefinition) -> str:
    """The start (a minute) of an event's bucket in the definition's window."""
    assert definition.window_days is not None
    width = bucket_width(definition.window_days)
    return f"(floor(extract(epoch FROM e.occurred_at) / 60)::bigint / {width} * {width})"


def leaves(definition: AttributeDefinition) -> int:
    """How many minutes after its start a bucket leaves the window."""
    assert definition.window_days is not None
    return bucket_width(definition.window_days) + definition.window_days * MINUTES_PER_DAY


def iso(column: str) -> str:
    """A time as `values.time_text` writes it."""
    return f"to_char({column} AT TIME ZONE 'UTC', {ISO})"
