"""Durations, times of day and time zones as journeys write them, and local time arithmetic.

- A duration is whole numbers with units, largest first, run together: `90s`, `30m`, `24h`,
  `1d12h`, `2w` (s, m, h, d, w); more than nothing and at most `MAX_DURATION` (3660 days).
- A time of day is `HH:MM` on a 24-hour clock (`09:00`, `21:30`).
- A time zone is an IANA name (`Europe/Lisbon`, `UTC`), as `zoneinfo` knows it.

Local times that a change of clock skips (02:30 on a spring-forward night) are taken as the
same wall time before the change; repeated ones (an autumn night) as their first occurrence.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_DURATION = timedelta(days=3660)
DURATION_PATTERN = r"^(?:[0-9]+w)?(?:[0-9]+d)?(?:[0-9]+h)?(?:[0-9]+m)?(?:[0-9]+s)?$"
TIME_OF_DAY_PATTERN = r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$"

_DURATION = re.compile(DURATION_PATTERN)
_PART = re.compile(r"([0-9]+)([wdhms])")
_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1)}
_UNITS |= {"m": timedelta(minutes=1), "s": timedelta(seconds=1)}
_MAX_DIGITS = 9


def parse_duration(text: object) -> timedelta | None:
    """Return the duration `text` names, or None when it is not one (or is zero or too long)."""
    if not isinstance(text, str) or not text or not _DURATION.fullmatch(text):
        return None
    parts = _PART.findall(text)
    if any(len(number) > _MAX_DIGITS for number, _ in parts):
        return None
    total = sum((int(number) * _UNITS[unit] for number, unit in parts), timedelta())
    return total if timedelta() < total <= MAX_DURATION else None


def duration_text(duration: timedelta) -> str:
    """Return the one text of `duration` in this grammar (`1d12h`)."""
    seconds = int(duration.total_seconds())
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out) or "0s"


def parse_time_of_day(text: object) -> time | None:
    """Return the time of day `HH:MM` names, or None."""
    if not isinstance(text, str) or not re.fullmatch(TIME_OF_DAY_PATTERN, text):
        return None
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def parse_zone(name: object) -> ZoneInfo | None:
    """Return the IANA time zone `name` names, or None when zoneinfo does not know it."""
    if not isinstance(name, str) or not name or len(name) > 64 or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def at_local(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """Return the UTC moment of wall-clock `clock` on `day` in `zone`."""
    return datetime.combine(day, clock, tzinfo=zone).astimezone(UTC)


def next_local_time(clock: time, zone: ZoneInfo, *, after: datetime) -> datetime:
    """Return the first moment at or after `after` when the clock in `zone` shows `clock`."""
    today = after.astimezone(zone).date()
    for offset in range(3):
        moment = at_local(today + timedelta(days=offset), clock, zone)
        if moment >= after:
            return moment
    raise AssertionError("a time of day recurs within three days")


def in_window(start: time, end: time, local: time) -> bool:
    """Whether wall time `local` lies in [start, end), a window that may span midnight."""
    if start < end:
        return start <= local < end
    return local >= start or local < end


def read_date(value: object) -> date | None:
    """Return the calendar date ISO text holds (`1990-05-17`, or a time's own date), else None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    text = value.strip()
    try:
        return date.fromisoformat(text[:10]) if len(text) >= 10 else None
    except ValueError:
        return None


def same_day_in_year(day: date, year: int) -> date:
    """Return `day`'s month and day in `year` (29 February is the 28th in other years)."""
    try:
        return day.replace(year=year)
    except ValueError:
        return day.replace(year=year, day=28)
