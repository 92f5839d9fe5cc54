"""How segments read JSON values: numbers (exactly), times (UTC) and dotted property paths.

Numbers are JSON numbers or numeric text ("120.00", as trackers often send amounts): text is a
decimal number with an optional sign, fraction and exponent, and nothing else (no "NaN",
"1,5" or "1_000"); booleans are not numbers. Numbers are read as `Decimal` from their text (a
float from its shortest text: 19.99 is 19.99), so sums are exact and the same in any order.

An absent value and JSON null are the same thing here: no value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
PropertyPath = tuple[str, ...]

EXACT = Context(prec=60, rounding=ROUND_HALF_EVEN)
"""Decimal arithmetic for amounts: 60 digits hold any sum of bounded amounts without rounding."""
AMOUNT_LIMIT = Decimal(10) ** 18
"""Amounts (what sum, average, min, max and distinct read) are smaller than this in size."""
AMOUNT_QUANTUM = Decimal("1e-9")
"""Amounts are rounded to nine decimal places (a billionth: far below any currency's unit)."""

_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_MAX_NUMBER_TEXT = 100
_MAX_TIME_TEXT = 64


def as_decimal(value: Any) -> Decimal | None:
    """Return the number `value` holds (a JSON number or numeric text), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str) and len(value) <= _MAX_NUMBER_TEXT:
        text = value.strip()
        if _NUMBER_TEXT.fullmatch(text):
            return Decimal(text)
    return None


def read_amount(value: Any) -> Decimal | None:
    """Return `value` as an amount to add up, or None when it is no number or too large.

    The bounds keep arithmetic exact and cheap: a number of 10^18 or more in size is skipped
    like text, and digits past the ninth decimal place are rounded (half to even).
    """
    number = as_decimal(value)
    if number is None or abs(number) >= AMOUNT_LIMIT:
        return None
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -9:
        number = number.quantize(AMOUNT_QUANTUM, context=EXACT)
    return number


def number_text(number: Decimal) -> str:
    """Return the one text of `number` kept in state: "320" for 320.00, never "-0" or "1E+2"."""
    if number.is_zero():
        return "0"
    return format(number.normalize(EXACT), "f")


def json_number(number: Decimal) -> int | float:
    """Return `number` as JSON: an int when it is whole, else a float."""
    if number == number.to_integral_value():
        return int(number)
    return float(number)


def utc(moment: datetime) -> datetime:
    """Return `moment` in UTC; a naive datetime is a bug in the caller, refused."""
    if moment.tzinfo is None:
        raise ValueError(f"segments need timezone-aware datetimes, got {moment!r}")
    return moment.astimezone(UTC)


def time_text(moment: datetime) -> str:
    """Return the one ISO text of `moment` kept in state and values (UTC, microseconds)."""
    return utc(moment).isoformat(timespec="microseconds")


def read_time(value: Any) -> datetime | None:
    """Return the time ISO 8601 text `value` names (without an offset it is UTC), else None."""
    if not isinstance(value, str) or len(value) > _MAX_TIME_TEXT:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def minute_of(moment: datetime) -> int:
    """Return the minute `moment` falls in, counted from the Unix epoch."""
    return (utc(moment) - EPOCH) // MINUTE


def minute_start(minute: int) -> datetime:
    """Return the moment minute number `minute` begins."""
    return EPOCH + minute * MINUTE


def parse_path(text: Any) -> PropertyPath | None:
    """Return the dotted path `text` names ("address.city"), or None if it is no such text."""
    if not isinstance(text, str) or not text:
        return None
    parts = tuple(text.split("."))
    return parts if all(parts) else None


def path_text(path: PropertyPath) -> str:
    return ".".join(path)


def lookup(data: Mapping[str, Any], path: PropertyPath) -> Any:
    """Return the value at `path` in nested objects, or None when any step is missing."""
    found: Any = data
    for part in path:
        if not isinstance(found, Mapping):
            return None
        found = found.get(part)
    return found
