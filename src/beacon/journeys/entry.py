"""Whether a trigger event starts a run, and the new run when it does.

`start` applies the journey's entry rules to the profile's earlier runs of this journey (any
version): imported events never start one; `once` (per key value, with a key), `every_time`,
`cooldown`; a `key` allows one active run per value; `max_concurrent` caps active runs. The
run's id is derived from the journey, the profile and the trigger event, so a redelivered
trigger makes the same run (and finds it among the existing runs: `duplicate`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from beacon.core import jsonio
from beacon.journeys.definition import Journey
from beacon.journeys.profiles import ProfileView
from beacon.journeys.runs import ENDED, Run
from beacon.journeys.stimuli import EventSnapshot
from beacon.journeys.triggers import ScheduleTrigger, matches, occurrence_ok
from beacon.segments.values import lookup, utc

_RUN_IDS = uuid.UUID("7d3f4c52-9a1e-4f0b-8c7e-5b2d9e6a1c30")


class PriorRun(Protocol):
    """What entry rules read of an earlier run (a `Run` is one; a stored row's summary too)."""

    @property
    def id(self) -> str: ...
    @property
    def key(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class NotStarted:
    """Why a trigger event started no run: `imported`, `not_triggered` (another type or its
    filters fail), `occurrence` (not the counted occurrence), `not_in_segment` (a schedule's),
    `no_key` (the trigger lacks the entry key), `duplicate` (this run exists), `once`,
    `cooldown`, `key_active`, `max_concurrent`."""

    reason: str
    detail: str = ""


def run_id_for(journey: str, profile_id: str, trigger_id: str) -> str:
    """The id of the run `trigger_id` starts for a profile: the same for a redelivery."""
    return str(uuid.uuid5(_RUN_IDS, f"{journey}\n{profile_id}\n{trigger_id}"))


def start(
    journey: Journey,
    *,
    version: int,
    profile: ProfileView,
    trigger: EventSnapshot,
    existing_runs: Sequence[PriorRun],
    now: datetime,
    occurrence: int | None = None,
) -> Run | NotStarted:
    """Return the new run (`pending`: give it `Start()`), or why `trigger` starts none.

    `existing_runs` are the profile's runs of this journey, any version, ended ones too (as
    far back as `once` must see). `occurrence` is the count `triggers.occurrence_attribute`
    describes, needed when the trigger has `nth` or `count`.
    """
    utc(now)
    if trigger.imported:
        return NotStarted("imported", "imported history never starts a journey")
    if not matches(journey.trigger, trigger):
        return NotStarted("not_triggered", f"{trigger.type} does not trigger {journey.name}")
    if not occurrence_ok(journey.trigger, occurrence):
        return NotStarted("occurrence", f"occurrence {occurrence} is not the counted one")
    if (
        isinstance(journey.trigger, ScheduleTrigger)
        and journey.trigger.segment not in profile.segments
    ):
        return NotStarted("not_in_segment", f"not in segment {journey.trigger.segment!r}")
    key = None
    if journey.entry.key is not None:
        value = lookup(trigger.properties, journey.entry.key)
        if value is None:
            return NotStarted("no_key", "the trigger event has no value for the entry key")
        key = value if isinstance(value, str) else jsonio.dumps_text(value)
    run_id = run_id_for(journey.name, profile.id, trigger.id)
    refused = _refusal(journey, run_id, key, existing_runs, now)
    if refused is not None:
        return refused
    return Run(run_id, journey.name, version, profile.id, trigger, now, key)


def _refusal(
    journey: Journey, run_id: str, key: str | None, runs: Sequence[PriorRun], now: datetime
) -> NotStarted | None:
    entry = journey.entry
    if any(run.id == run_id for run in runs):
        return NotStarted("duplicate", f"run {run_id} exists")
    same_key = [run for run in runs if entry.key is None or run.key == key]
    if entry.mode == "once" and same_key:
        return NotStarted("once", "the profile has been through this journey")
    if entry.mode == "cooldown" and entry.cooldown is not None:
        recent = [run for run in same_key if run.started_at > now - entry.cooldown]
        if recent:
            return NotStarted("cooldown", "a run started within the cooldown")
    if entry.key is not None and any(_active(run) for run in same_key):
        return NotStarted("key_active", f"a run for key {key!r} is active")
    active = [run for run in runs if _active(run)]
    if entry.max_concurrent is not None and len(active) >= entry.max_concurrent:
        return NotStarted("max_concurrent", f"{len(active)} runs are active")
    return None


def _active(run: PriorRun) -> bool:
    return run.status not in ENDED
