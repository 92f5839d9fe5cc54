"""Comparison operators, shared by event property filters and rule conditions.

What each operator means, for a value `x` (absent and null are both "no value"):

- `eq`, `ne`: `x` equals the value (text, number, true/false or null). Two texts compare as
  text, two numbers as numbers, and a number with numeric text as numbers (123 = "123.0";
  "007" and "7" are two texts, so unequal); true/false equal only themselves; null is no value.
  `ne` is `eq`'s opposite: true when there is no value.
- `in`, `not_in`: `x` equals one of a non-empty list of values (`not_in`: none; true when
  there is no value).
- `contains`: text `x` contains the text value, or list `x` has an item equal to the value.
- `gt`, `gte`, `lt`, `lte`: `x` is a number (or numeric text) above / at least / below / at
  most the value, a number.
- `exists`, `not_exists`: `x` has a value (null is none); they take no value.
- `before`, `after`: `x` is ISO 8601 text of a time before / at-or-after the value (ISO text).
- `within_days`, `older_than_days`: `x` is ISO 8601 text of a time less than / at least the
  value (whole days, 0 to 3660) before now; a time after now is within any number of days.
  Relative to now, these two are the only results that change as time passes alone.

A value of the wrong kind (text for `gt`, a number for `before`) makes the comparison false.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from beacon.core.jsonio import Path
from beacon.segments.validation import Problems
from beacon.segments.values import as_decimal, read_time

ValueKind = Literal["any", "number", "time", "list", "count"]
"""What a compared value is known to be: a computed attribute's kind says; traits are "any"."""

EQUALITY = ("eq", "ne")
MEMBERSHIP = ("in", "not_in")
ORDER = ("gt", "gte", "lt", "lte")
PRESENCE = ("exists", "not_exists")
ABSOLUTE = ("before", "after")
RELATIVE = ("older_than_days", "within_days")
FILTER_OPS = (*EQUALITY, *MEMBERSHIP, "contains", *ORDER, *PRESENCE)
CONDITION_OPS = (*FILTER_OPS, *ABSOLUTE, *RELATIVE)
COUNT_OPS = (*EQUALITY, *MEMBERSHIP, *ORDER)
MAX_DAYS = 3660
DAY = timedelta(days=1)

_FITS: dict[ValueKind, tuple[str, ...]] = {
    "any": CONDITION_OPS,
    "number": (*EQUALITY, *MEMBERSHIP, *ORDER, *PRESENCE),
    "time": (*ABSOLUTE, *RELATIVE, *PRESENCE),
    "list": ("contains", *PRESENCE),
    "count": COUNT_OPS,
}
_NOUNS: dict[ValueKind, str] = {
    "number": "a number, not a time",
    "time": "a time",
    "list": "a list",
    "count": "a count",
}
_ORDERS: dict[str, Callable[[Decimal, Decimal], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


@dataclass(frozen=True, slots=True)
class Comparison:
    """An operator and the value it compares with (None for `exists` and `not_exists`).

    The list of `in` and `not_in` is kept as a tuple, so comparisons (and what holds them)
    can be hashed.
    """

    op: str
    value: Any = None

    def as_json(self) -> dict[str, Any]:
        if self.op in PRESENCE:
            return {"op": self.op}
        found = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"op": self.op, "value": found}


def read_comparison(
    raw: Mapping[str, Any],
    *,
    ops: Sequence[str],
    value_kind: ValueKind,
    subject: str,
    at: Path,
    problems: Problems,
) -> Comparison | None:
    """Return the comparison in `raw`'s "op" and "value", or None having recorded why not.

    `ops` are the operators allowed here, `value_kind` what the compared value is known to be,
    `subject` names it in messages.
    """
    op = raw.get("op")
    if "op" not in raw:
        problems.add((*at, "op"), "missing", "op is required")
        return None
    if not isinstance(op, str) or op not in ops:
        problems.add(
            (*at, "op"), "unknown_op", f"unknown operator {op!r} (known: {', '.join(ops)})"
        )
        return None
    if op not in _FITS[value_kind]:
        fitting = ", ".join(o for o in _FITS[value_kind] if o in ops)
        problems.add(
            (*at, "op"),
            "type_mismatch",
            f"{subject} holds {_NOUNS[value_kind]}: compare it with {fitting}",
        )
        return None
    at_value = (*at, "value")
    if op in PRESENCE:
        if "value" in raw:
            problems.add(at_value, "unknown_key", f"{op} takes no value")
            return None
        return Comparison(op)
    if "value" not in raw:
        problems.add(at_value, "missing", f"{op} needs a value")
        return None
    value = raw["value"]
    if op in MEMBERSHIP:
        if not isinstance(value, list):
            problems.add(at_value, "not_a_list", f"{op} needs a list of values")
            return None
        if not value:
            problems.add(at_value, "empty", f"{op} needs at least one value")
            return None
        checks = [
            _check_one(op, item, value_kind, subject, (*at_value, i), problems)
            for i, item in enumerate(value)
        ]
        return Comparison(op, tuple(value)) if all(checks) else None
    return (
        Comparison(op, value)
        if _check_one(op, value, value_kind, subject, at_value, problems)
        else None
    )


def _check_one(
    op: str, value: Any, value_kind: ValueKind, subject: str, at: Path, problems: Problems
) -> bool:
    """Whether `value` fits `op` (one value: an item of `in`'s list), recording why not."""
    is_number = _is_number(value)
    is_time = read_time(value) is not None
    if value_kind == "count" and not (isinstance(value, int) and not isinstance(value, bool)):
        problems.add(at, "type_mismatch", "a count is compared with a whole number")
    elif value_kind == "count" and value < 0:
        problems.add(at, "out_of_range", "a count cannot be negative")
    elif value_kind == "number" and not is_number:
        why = f"{value!r} is a time" if is_time else f"{op} needs a number"
        problems.add(at, "type_mismatch", f"{subject} holds a number and {why}")
    elif op in (*EQUALITY, *MEMBERSHIP, "contains") and not _is_scalar(value):
        problems.add(at, "malformed", f"{op} compares with text, a number, true, false or null")
    elif op == "contains" and value is None:
        problems.add(at, "malformed", "contains needs text, a number, true or false")
    elif op in ORDER and not is_number:
        why = f"{value!r} is a time: use before or after" if is_time else "it needs a number"
        problems.add(at, "type_mismatch", f"{op} compares numbers and {why}")
    elif op in ABSOLUTE and not is_time:
        problems.add(
            at, "type_mismatch", f"{op} needs a time as ISO 8601 text, such as 2026-01-31T00:00:00Z"
        )
    elif op in RELATIVE and not (isinstance(value, int) and not isinstance(value, bool)):
        problems.add(at, "type_mismatch", f"{op} needs a whole number of days")
    elif op in RELATIVE and not 0 <= value <= MAX_DAYS:
        problems.add(at, "out_of_range", f"{op} takes 0 to {MAX_DAYS} days")
    else:
        return True
    return False


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool) or _is_number(value)


def holds(comparison: Comparison, actual: Any, *, now: datetime) -> bool:
    """Whether `actual` (None: no value) satisfies `comparison` at `now`."""
    op = comparison.op
    if op not in RELATIVE:
        return matches(comparison, actual)
    if read_time(actual) is None:
        return False
    turn = turns_at(comparison, actual)
    if turn is None:  # past year 9999: never old enough
        return op == "within_days"
    return now < turn if op == "within_days" else now >= turn


def matches(comparison: Comparison, actual: Any) -> bool:
    """Whether `actual` satisfies a comparison that does not depend on now."""
    op, expected = comparison.op, comparison.value
    if op in PRESENCE:
        return (actual is not None) == (op == "exists")
    if op in EQUALITY:
        return equal(actual, expected) == (op == "eq")
    if op in MEMBERSHIP:
        return any(equal(actual, item) for item in expected) == (op == "in")
    if op == "contains":
        if isinstance(actual, str):
            return isinstance(expected, str) and expected in actual
        return isinstance(actual, list) and any(equal(item, expected) for item in actual)
    if op in ORDER:
        number, bound = as_decimal(actual), as_decimal(expected)
        return number is not None and bound is not None and _ORDERS[op](number, bound)
    if op in ABSOLUTE:
        moment, bound_time = read_time(actual), read_time(expected)
        if moment is None or bound_time is None:
            return False
        return moment < bound_time if op == "before" else moment >= bound_time
    raise ValueError(f"{op} depends on now: use holds()")


def turns_at(comparison: Comparison, actual: Any) -> datetime | None:
    """When a relative time comparison of `actual` flips, or None if it never will."""
    if comparison.op not in RELATIVE:
        return None
    moment = read_time(actual)
    if moment is None:
        return None
    days: int = comparison.value
    try:
        return moment + days * DAY
    except OverflowError:
        return None


def equal(actual: Any, expected: Any) -> bool:
    """Whether two JSON values are equal as `eq` means it (see the module docstring)."""
    if actual is None or expected is None:
        return actual is None and expected is None
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    if isinstance(actual, str) and isinstance(expected, str):
        return actual == expected
    number, other = as_decimal(actual), as_decimal(expected)
    return number is not None and other is not None and number == other
