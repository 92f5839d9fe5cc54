"""Distinct values of a property: the 100 most recently seen, exactly, whatever the order.

Values are text (up to 256 characters), numbers (1, 1.0 and 1.00 are one value; numeric text
stays text, as ids are often numeric text) and true/false; null, objects, lists, longer text
and numbers of 10^18 or more in size are skipped. The value is the list sorted: true/false,
then numbers, then text.

State: `{"values": {KEY: MINUTE}}`, plus `"horizon"` in a rolling window (see `windows`): KEY
is the value's JSON text (a number in its one exact text), MINUTE the start of the bucket of
its latest event. Past `DISTINCT_CAP` values, those seen latest are kept (at equal times, the
greater key). That is exact: a value dropped is older than every value kept, so it would leave
a window before them, and an older event bringing it back would drop it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from beacon.core import jsonio
from beacon.segments.values import minute_of, minute_start, number_text, read_amount
from beacon.segments.windows import State, StateView, bucket_of, horizon, leaves_at

DISTINCT_CAP = 100
MAX_TEXT = 256


def distinct_key(value: Any) -> str | None:
    """Return the key `value` is kept under, or None when distinct skips it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return jsonio.dumps_text(value) if len(value) <= MAX_TEXT else None
    if isinstance(value, int | float):
        amount = read_amount(value)
        return None if amount is None else number_text(amount)
    return None


def add_value(
    window_days: int | None, state: StateView, occurred_at: datetime, key: str, now: datetime
) -> State:
    """Return the state having seen value `key` at `occurred_at` (at `now`)."""
    values: dict[str, int] = dict(state.get("values", {}))
    seen, start, fresh = 0, minute_of(occurred_at), True
    if window_days is not None:
        seen = horizon(state, now)
        values = {k: m for k, m in values.items() if leaves_at(m, window_days) > seen}
        start = bucket_of(occurred_at, window_days)
        fresh = leaves_at(start, window_days) > seen
    if fresh:
        values[key] = max(values.get(key, start), start)
    if len(values) > DISTINCT_CAP:
        latest = sorted(values, key=lambda k: (values[k], k), reverse=True)[:DISTINCT_CAP]
        values = {k: values[k] for k in latest}
    kept: State = {"values": dict(sorted(values.items()))}
    if window_days is not None:
        kept["horizon"] = seen
    return kept


def distinct_value(window_days: int | None, state: StateView, now: datetime) -> list[Any]:
    """Return the distinct values counted at `now`, sorted."""
    return _sorted(_live(window_days, state, now))


def distinct_changes(
    window_days: int | None, state: StateView, now: datetime
) -> Iterator[tuple[datetime, list[Any]]]:
    """Yield (when, value from then on) each time a value leaves the window, in order."""
    if window_days is None:
        return
    live = _live(window_days, state, now)
    leaving = sorted({leaves_at(minute, window_days) for minute in live.values()})
    for minute in leaving:
        live = {k: m for k, m in live.items() if leaves_at(m, window_days) > minute}
        yield minute_start(minute), _sorted(live)


def _live(window_days: int | None, state: StateView, now: datetime) -> dict[str, int]:
    values: dict[str, int] = state.get("values", {})
    if window_days is None:
        return values
    minute = minute_of(now)
    return {k: m for k, m in values.items() if leaves_at(m, window_days) > minute}


def _sorted(keys: dict[str, int]) -> list[Any]:
    return [jsonio.loads(key) for key in sorted(keys, key=_order)]


def _order(key: str) -> tuple[int, Any]:
    if key in ("false", "true"):
        return 0, key == "true"
    if key.startswith('"'):
        return 2, jsonio.loads(key)
    return 1, Decimal(key)
