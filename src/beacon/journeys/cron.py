"""Cron expressions of scheduled journeys, and when one fires next in its time zone.

Five fields, `minute hour day-of-month month day-of-week`, each `*`, a number, a range `a-b`,
a step `*/n` or `a-b/n`, or a comma list of those. Months may be `jan`..`dec` and weekdays
`sun`..`sat` (0 and 7 are Sunday). When both day fields are restricted, a day matching either
fires (as in Vixie cron). Wall times a clock change skips do not fire that day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS = (  # name, lowest, highest, names of values counted from lowest
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_SEARCH_DAYS = 366 * 5  # a valid expression fires within this (29 February: within 4 years)


class CronError(ValueError):
    """A cron expression that cannot be read, or that never fires."""


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed cron expression: the values each field allows."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 is Sunday
    any_day: bool  # day of month was `*`
    any_weekday: bool  # day of week was `*`

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return by_date and by_weekday
        return by_date or by_weekday


def parse_cron(text: str) -> Cron:
    """Return the schedule `text` names, or raise `CronError` saying what is wrong."""
    fields = text.split()
    if len(fields) != len(_FIELDS):
        raise CronError("a cron expression has five fields: minute hour day month weekday")
    values = [_field(raw, *spec) for raw, spec in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(0 if day == 7 else day for day in values[4])
    cron = Cron(
        values[0], values[1], values[2], values[3], weekdays, fields[2] == "*", fields[4] == "*"
    )
    if next_fire(cron, ZoneInfo("UTC"), after=datetime(2000, 1, 1, tzinfo=UTC)) is None:
        raise CronError("this cron expression never fires (no such day)")
    return cron


def next_fire(cron: Cron, zone: ZoneInfo, *, after: datetime) -> datetime | None:
    """Return the first moment strictly after `after` that `cron` fires in `zone`, else None."""
    start = after.astimezone(zone).date()
    for offset in range(_SEARCH_DAYS):
        day = start + timedelta(days=offset)
        if not cron.day_matches(day):
            continue
        for hour in sorted(cron.hours):
            for minute in sorted(cron.minutes):
                wall = datetime.combine(day, time(hour, minute), tzinfo=zone)
                moment = wall.astimezone(UTC)
                if moment.astimezone(zone).replace(tzinfo=None) != wall.replace(tzinfo=None):
                    continue  # the clock skips this wall time today
                if moment > after:
                    return moment
    return None


def _field(raw: str, name: str, low: int, high: int, names: tuple[str, ...]) -> frozenset[int]:
    found: set[int] = set()
    for part in raw.split(","):
        body, _, step_text = part.partition("/")
        step = _number(step_text, name, 1, high) if step_text else 1
        if body == "*":
            first, last = low, high
        elif "-" in body:
            left, _, right = body.partition("-")
            first = _value(left, name, low, high, names)
            last = _value(right, name, low, high, names)
            if first > last:
                raise CronError(f"{name}: the range {body} runs backwards")
        else:
            first = _value(body, name, low, high, names)
            last = high if step_text else first
        found.update(range(first, last + 1, step))
    return frozenset(found)


def _value(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if text.lower() in names:
        return names.index(text.lower()) + low
    return _number(text, name, low, high)


def _number(text: str, name: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 2:
        raise CronError(f"{name}: {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{name}: {value} is outside {low}-{high}")
    return value
