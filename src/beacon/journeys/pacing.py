"""How often and when a journey's messages may go: frequency caps and quiet hours.

    "frequency_caps": {"limits": [{"channel": CHANNEL, "max": N, "period": DURATION}, ...],
                       "include_defaults": true, "when_capped": "skip" | "defer"}
    "quiet_hours": {"start": "21:00", "end": "08:00"}

A journey's own limit counts the messages this journey sent the profile on that channel in the
last period; the deployment's defaults (given to `advance`, applied unless `include_defaults`
is false) count every message sent to the profile. A send over a limit is skipped (`skip`, the
default) or waits until the limit lets it go (`defer`). A send whose moment falls in quiet
hours (the profile's local time: see `Journey.zone_for`) waits for them to end. Sends marked
`transactional` (an order confirmation) are neither capped nor held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from beacon.journeys.profiles import SentMessage
from beacon.journeys.times import in_window, next_local_time, parse_time_of_day
from beacon.journeys.validation import Reading


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    """At most `max` messages on `channel` in any `period`."""

    channel: str
    max: int
    period: timedelta


@dataclass(frozen=True, slots=True)
class FrequencyCaps:
    limits: tuple[FrequencyCap, ...] = ()
    include_defaults: bool = True
    when_capped: Literal["skip", "defer"] = "skip"


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local hours in [start, end) when messages wait (the window may span midnight)."""

    start: time
    end: time

    def ends_at(self, zone: ZoneInfo, *, now: datetime) -> datetime | None:
        """When the quiet hours `now` falls in end, or None when `now` is not in them."""
        if not in_window(self.start, self.end, now.astimezone(zone).time()):
            return None
        return next_local_time(self.end, zone, after=now)


@dataclass(frozen=True, slots=True)
class Capped:
    """A send a limit holds back: which limit, and when it next lets one go."""

    cap: FrequencyCap
    scope: Literal["journey", "default"]
    opens_at: datetime


def capped(
    caps: FrequencyCaps,
    *,
    channel: str,
    journey: str,
    sent: Sequence[SentMessage],
    defaults: Sequence[FrequencyCap],
    now: datetime,
) -> Capped | None:
    """Return the limit holding a send on `channel` back at `now` (the latest to open), or None."""
    found: Capped | None = None
    scopes: list[tuple[Literal["journey", "default"], Sequence[FrequencyCap]]] = [
        ("journey", caps.limits)
    ]
    if caps.include_defaults:
        scopes.append(("default", defaults))
    for scope, limits in scopes:
        for cap in limits:
            if cap.channel != channel:
                continue
            times = sorted(
                message.sent_at
                for message in sent
                if message.channel == channel
                and now - cap.period < message.sent_at <= now
                and (scope == "default" or message.journey == journey)
            )
            if len(times) < cap.max:
                continue
            # Once the oldest sends that put the count at the limit age out, one more may go.
            opens_at = times[len(times) - cap.max] + cap.period
            if found is None or opens_at > found.opens_at:
                found = Capped(cap, scope, opens_at)
    return found


def read_caps(reading: Reading, raw: Any) -> FrequencyCaps | None:
    if not isinstance(raw, Mapping):
        return None
    limits = []
    for index, item in enumerate(raw.get("limits") or []):
        if not isinstance(item, Mapping):
            continue
        period = reading.duration(item, "period", ("frequency_caps", "limits", index))
        channel, most = item.get("channel"), item.get("max")
        if period is not None and isinstance(channel, str) and isinstance(most, int):
            limits.append(FrequencyCap(channel, most, period))
    include = raw.get("include_defaults", True) is not False
    when: Literal["skip", "defer"] = "defer" if raw.get("when_capped") == "defer" else "skip"
    return FrequencyCaps(tuple(limits), include, when)


def read_quiet_hours(reading: Reading, raw: Any) -> QuietHours | None:
    if not isinstance(raw, Mapping):
        return None
    start, end = parse_time_of_day(raw.get("start")), parse_time_of_day(raw.get("end"))
    if start is None or end is None:
        return None
    if start == end:
        reading.add(("quiet_hours", "end"), "bad_time", "quiet hours end when they start")
        return None
    return QuietHours(start, end)
