"""The steps of a journey: what each kind holds, read from its document.

Each step names where the run goes next (`next`, or its branches); a step that names none
ends the run there, completed. See `definition` for the grammar.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

from beacon.core.jsonio import Path
from beacon.journeys.conditions import (
    EventCondition,
    ProfileCondition,
    read_condition,
    read_event_condition,
)
from beacon.journeys.times import parse_time_of_day
from beacon.journeys.validation import Reading
from beacon.segments.values import PropertyPath, parse_path, read_time

CONTENT: dict[str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    # channel: (fields allowed, groups of which one field at least is needed)
    "email": (("subject", "html", "text"), (("subject",), ("html", "text"))),
    "sms": (("text",), (("text",),)),
    "push": (("title", "body", "url"), (("title",), ("body",))),
    "webhook": (("body",), (("body",),)),
    "capture": (("subject", "html", "text", "title", "body", "url"), ()),
}


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait `duration`; or until a time of day; or a moment; or the date a trait holds."""

    name: str
    next: str | None = None
    duration: timedelta | None = None
    until_time: time | None = None
    zone: ZoneInfo | None = None
    until: datetime | None = None
    until_trait: PropertyPath | None = None
    offset_days: int = 0
    at: time | None = None


@dataclass(frozen=True, slots=True)
class WaitForEvent:
    name: str
    condition: EventCondition
    timeout: timedelta
    on_timeout: str
    on_event: str | None = None


@dataclass(frozen=True, slots=True)
class Branch:
    name: str
    condition: ProfileCondition
    then: str | None = None
    otherwise: str | None = None


@dataclass(frozen=True, slots=True)
class SplitBranch:
    name: str
    percent: Decimal
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Split:
    """Send each run down one branch at random (fixed per run); `holdout` percent exit."""

    name: str
    branches: tuple[SplitBranch, ...]
    holdout: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class Send:
    name: str
    channel: str
    template: str | None = None
    content: Mapping[str, str] | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    transactional: bool = False
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Webhook:
    name: str
    url: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    next: str | None = None


@dataclass(frozen=True, slots=True)
class TraitUpdate:
    name: str
    set: Mapping[str, Any] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    increment: Mapping[str, int | float] = field(default_factory=dict)
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Emit:
    name: str
    event_type: str
    properties: Mapping[str, Any] = field(default_factory=dict)
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Exit:
    name: str
    reason: str = "exit step"


Step: TypeAlias = Wait | WaitForEvent | Branch | Split | Send | Webhook | TraitUpdate | Emit | Exit


def read_step(
    reading: Reading, name: str, raw: Mapping[str, Any], *, trigger_type: str | None
) -> Step | None:
    """Read one well-shaped step (the schema checked its shape), recording what is wrong."""
    at: Path = ("steps", name)
    kind, after = raw.get("type"), _text(raw.get("next"))
    if kind == "wait":
        return _wait(reading, name, raw, at)
    if kind == "wait_for_event":
        condition = read_event_condition(reading, raw, at, trigger_type=trigger_type)
        timeout = reading.duration(raw, "timeout", at)
        on_timeout = _text(raw.get("on_timeout"))
        if condition is None or timeout is None or on_timeout is None:
            return None
        return WaitForEvent(name, condition, timeout, on_timeout, _text(raw.get("on_event")))
    if kind == "branch":
        condition_raw = raw.get("if")
        found = read_condition(reading, condition_raw, (*at, "if"), trigger_type=trigger_type)
        if found is None:
            return None
        return Branch(name, found, _text(raw.get("then")), _text(raw.get("else")))
    if kind == "split":
        return _split(reading, name, raw, at)
    if kind == "send":
        return _send(reading, name, raw, at)
    if kind == "webhook" and isinstance(raw.get("url"), str):
        url: str = raw["url"]
        if not url.lower().startswith(("http://", "https://", "{{")):
            reading.add((*at, "url"), "malformed", "a webhook URL starts with http:// or https://")
        return Webhook(
            name, url, raw.get("method", "POST"), raw.get("headers", {}), raw.get("body"), after
        )
    if kind == "update_traits":
        if not any(key in raw for key in ("set", "unset", "increment")):
            reading.add(at, "missing", "update_traits needs set, unset or increment")
        return TraitUpdate(
            name, raw.get("set", {}), tuple(raw.get("unset", ())), raw.get("increment", {}), after
        )
    if kind == "emit" and isinstance(raw.get("event"), str):
        return Emit(name, raw["event"], raw.get("properties", {}), after)
    if kind == "exit":
        return Exit(name, raw.get("reason", "exit step"))
    return None


def _wait(reading: Reading, name: str, raw: Mapping[str, Any], at: Path) -> Wait | None:
    given = [key for key in ("duration", "until_time", "until", "until_trait") if key in raw]
    if len(given) != 1:
        found = ", ".join(given) or "none"
        reading.add(
            at, "conflict", f"a wait has one of duration, until_time, until, until_trait ({found})"
        )
        return None
    for key, belongs in (("time_zone", "until_time"), ("time", "until_trait")):
        if key in raw and belongs not in raw:
            reading.add((*at, key), "conflict", f"{key} goes with {belongs}")
    for key in ("offset_days",):
        if key in raw and "until_trait" not in raw:
            reading.add((*at, key), "conflict", f"{key} goes with until_trait")
    until = None
    if "until" in raw:
        until = read_time(raw["until"])
        if until is None:
            reading.add((*at, "until"), "bad_time", f"{raw['until']!r} is not an ISO 8601 time")
            return None
    offset = raw.get("offset_days", 0)
    return Wait(
        name,
        _text(raw.get("next")),
        duration=reading.duration(raw, "duration", at),
        until_time=parse_time_of_day(raw.get("until_time")),
        zone=reading.zone(raw, "time_zone", at),
        until=until,
        until_trait=parse_path(raw.get("until_trait")),
        offset_days=offset if isinstance(offset, int) else 0,
        at=parse_time_of_day(raw.get("time")),
    )


def _split(reading: Reading, name: str, raw: Mapping[str, Any], at: Path) -> Split | None:
    branches = [
        SplitBranch(item["name"], Decimal(str(item["percent"])), _text(item.get("next")))
        for item in raw.get("branches", [])
        if isinstance(item, Mapping)
        and isinstance(item.get("name"), str)
        and isinstance(item.get("percent"), int | float)
    ]
    holdout_raw = raw.get("holdout", 0)
    holdout = Decimal(str(holdout_raw)) if isinstance(holdout_raw, int | float) else Decimal(0)
    names = [branch.name for branch in branches]
    for index, branch in enumerate(branches):
        if names.index(branch.name) != index:
            reading.add((*at, "branches", index, "name"), "conflict", "branch names are unique")
        if branch.percent.as_tuple().exponent < -2:  # type: ignore[operator]
            reading.add((*at, "branches", index, "percent"), "percentages", "at most two decimals")
    total = sum((branch.percent for branch in branches), holdout)
    if total != 100:
        reading.add(
            (*at, "branches"),
            "percentages",
            f"the branches' percentages and the holdout add up to {total}, not 100",
        )
    return Split(name, tuple(branches), holdout)


def _send(reading: Reading, name: str, raw: Mapping[str, Any], at: Path) -> Send | None:
    channel = raw.get("channel")
    if not isinstance(channel, str) or channel not in CONTENT:
        return None
    template, content = raw.get("template"), raw.get("content")
    if (template is None) == (content is None):
        reading.add(at, "conflict", "a send has a template or content (one of them)")
    if isinstance(content, Mapping):
        allowed, needed = CONTENT[channel]
        for key in content:
            if key not in allowed:
                known = ", ".join(allowed)
                reading.add((*at, "content", key), "unknown_key", f"{channel} content has {known}")
        for group in needed:
            if not any(content.get(key) for key in group):
                reading.add(
                    (*at, "content"),
                    "missing_content",
                    f"{channel} content needs {' or '.join(group)}",
                )
    return Send(
        name,
        channel,
        template if isinstance(template, str) else None,
        dict(content) if isinstance(content, Mapping) else None,
        raw.get("context", {}),
        raw.get("transactional", False) is True,
        _text(raw.get("next")),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
