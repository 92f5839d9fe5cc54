"""The dry run: stored history replayed through a journey on a simulated clock, in memory.

`simulate` reads the events stored between `since` and `until` in time order and hands each to
the same `Pipeline` the worker runs, over a `MemoryLedger`: runs, timers and sends live in
memory, timers fire (on the simulated clock, at their due time) before any later event, and the
effects are recorded, not applied. Nothing is sent and nothing is written. Profiles are read as
they are now (traits, consents, segments), counts of earlier events from the stored history.
Imported history acts as it does live (it starts nothing, moves no run) unless
`include_imported` asks to replay it as if it had been live. Events the journey's own steps
would emit are reported, not replayed.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from beacon.core import jsonio
from beacon.journeys import effects as fx
from beacon.journeys.catalog import catalog_of
from beacon.journeys.definition import Journey
from beacon.journeys.entry import PriorRun
from beacon.journeys.ledger import HeldRuns
from beacon.journeys.process import (
    DATE_TIMER,
    INACTIVITY_TIMER,
    RUN_TIMER,
    Pipeline,
)
from beacon.journeys.profiles import ProfileView, SentMessage
from beacon.journeys.runs import Run
from beacon.journeys.stimuli import EventSnapshot
from beacon.journeys.triggers import ScheduleTrigger
from beacon.journeys.views import SegmentReads, count_occurrences, read_profile
from beacon.segments.attributes import AttributeDefinition
from beacon.segments.values import time_text
from beacon.timers.store import stored_time

Fetch = Callable[..., Awaitable[list[tuple[Any, ...]]]]
PAGE = 2000
MAX_LISTED = 1000


@dataclass
class Report:
    """What the journey would have done: totals, and the first `MAX_LISTED` of each list."""

    journey: str
    since: datetime
    until: datetime
    events: int = 0
    entered: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    exits: list[dict[str, Any]] = field(default_factory=list)
    conversions: list[dict[str, Any]] = field(default_factory=list)
    other_effects: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, item: dict[str, Any]) -> None:
        self.totals[kind] = self.totals.get(kind, 0) + 1
        listed: list[dict[str, Any]] = getattr(self, kind)
        if len(listed) < MAX_LISTED:
            listed.append(item)

    def as_json(self) -> dict[str, Any]:
        return {
            "journey": self.journey,
            "since": time_text(self.since),
            "until": time_text(self.until),
            "events_replayed": self.events,
            "totals": {
                kind: self.totals.get(kind, 0)
                for kind in ("entered", "messages", "skipped", "exits", "conversions")
            }
            | {"other_effects": self.totals.get("other_effects", 0)},
            "entered": self.entered,
            "messages": self.messages,
            "skipped": self.skipped,
            "exits": self.exits,
            "conversions": self.conversions,
            "other_effects": self.other_effects,
        }


class MemoryLedger:
    """The pipeline's ledger in memory; reads profiles and history through `fetch`."""

    def __init__(self, fetch: Fetch, report: Report) -> None:
        self.fetch = fetch
        self.report = report
        self.now = report.since
        self.runs = HeldRuns()
        self.sends: dict[str, list[SentMessage]] = {}
        self.timers: dict[str, tuple[datetime, str, dict[str, Any]]] = {}
        self.queue: list[tuple[datetime, str]] = []
        self.profiles: dict[tuple[str, int], ProfileView | None] = {}

    async def prior_runs(self, profile_id: str, journey: str) -> Sequence[PriorRun]:
        return [r for r in self.runs.of_profile(profile_id) if r.journey == journey]

    async def active_runs(self, profile_id: str, journeys: Sequence[str]) -> list[Run]:
        return self.runs.live(profile_id, journeys)

    async def waiting_runs(self, event_type: str, match: str) -> list[Run]:
        return self.runs.waiting(event_type, match)

    async def run(self, run_id: str) -> Run | None:
        return self.runs.get(run_id)

    async def profile(self, profile_id: str, journey: Journey) -> ProfileView | None:
        key = (profile_id, id(journey))
        if key not in self.profiles:
            self.profiles[key] = await read_profile(self.fetch, profile_id, journey)
        return self.profiles[key]

    async def sent(self, profile_id: str, since: datetime) -> list[SentMessage]:
        return [m for m in self.sends.get(profile_id, []) if m.sent_at > since]

    async def occurrence(self, counted: AttributeDefinition, event: EventSnapshot) -> int:
        return await count_occurrences(self.fetch, counted, event)

    async def save(
        self, journey: Journey, before: Run | None, after: Run, effects: Sequence[fx.Effect]
    ) -> None:
        self.runs.hold(after)
        at = time_text(self.now)
        base = {"run_id": after.id, "profile_id": after.profile_id, "at": at}
        if before is None:
            self.report.add("entered", base | {"trigger_event_id": after.trigger.id})
        for effect in effects:
            self._record(journey, effect, base)

    def _record(self, journey: Journey, effect: fx.Effect, base: dict[str, Any]) -> None:
        if isinstance(effect, fx.RequestDelivery):
            self.sends.setdefault(effect.profile_id, []).append(
                SentMessage(effect.channel, self.now, journey.name)
            )
            message = {
                "channel": effect.channel,
                "template": effect.template,
                "content": None if effect.content is None else dict(effect.content),
                "idempotency_key": effect.idempotency_key,
            }
            self.report.add("messages", base | message)
        elif isinstance(effect, fx.SendSkipped):
            skipped = {"channel": effect.channel, "reason": effect.reason, **effect.detail}
            self.report.add("skipped", base | skipped)
        elif isinstance(effect, fx.RunEnded):
            self.report.add("exits", base | {"status": effect.status, "reason": effect.reason})
        elif isinstance(effect, fx.RecordConversion):
            self.report.add("conversions", base | {"event_id": effect.event_id})
        elif isinstance(effect, fx.ScheduleTimer):
            self._schedule(effect.key, RUN_TIMER, effect.run_at, {"run": effect.run_id})
        elif isinstance(effect, fx.CancelTimer):
            self.timers.pop(effect.key, None)
        else:
            kind = type(effect).__name__
            self.report.add("other_effects", base | {"effect": kind, "key": effect.idempotency_key})

    def _schedule(self, key: str, kind: str, run_at: datetime, payload: dict[str, Any]) -> None:
        self.timers[key] = (run_at, kind, payload)
        heapq.heappush(self.queue, (run_at, key))

    async def timer_at(self, key: str) -> datetime | None:
        found = self.timers.get(key)
        return None if found is None else found[0]

    async def set_timer(
        self, key: str, kind: str, run_at: datetime, payload: dict[str, Any]
    ) -> None:
        self._schedule(key, kind, run_at, payload)

    async def cancel_timer(self, key: str) -> None:
        self.timers.pop(key, None)

    async def segment_members(self, segment: str, after: str, limit: int) -> list[str]:
        return await SegmentReads(self.fetch).members(segment, after, limit)

    def next_due(self, until: datetime) -> tuple[str, datetime, str, dict[str, Any]] | None:
        """Take the earliest timer due at or before `until` (stale queue entries skipped)."""
        while self.queue and self.queue[0][0] <= until:
            run_at, key = heapq.heappop(self.queue)
            found = self.timers.get(key)
            if found is not None and found[0] == run_at:
                del self.timers[key]
                return key, run_at, found[1], found[2]
        return None


async def history(
    fetch: Fetch, since: datetime, until: datetime, *, include_imported: bool = False
) -> AsyncIterator[EventSnapshot]:
    """The events stored between `since` and `until`, oldest first, a page at a time
    (imported ones marked so, unless `include_imported` takes them as live)."""
    after: tuple[datetime, str] | None = None
    while True:
        keyset = "" if after is None else " AND (occurred_at > ? OR (occurred_at = ? AND id > ?))"
        more: list[Any] = [] if after is None else [after[0], after[0], after[1]]
        rows = await fetch(
            "SELECT id, type, profile_id, occurred_at, properties, imported FROM events"
            f" WHERE occurred_at >= ? AND occurred_at <= ?{keyset}"
            " ORDER BY occurred_at, id LIMIT ?",
            since,
            until,
            *more,
            PAGE,
        )
        for event_id, kind, profile_id, occurred, properties, imported in rows:
            moment = stored_time(occurred)
            props = jsonio.loads(properties) if isinstance(properties, str | bytes) else properties
            yield EventSnapshot(
                str(event_id),
                str(kind),
                moment,
                props or {},
                None if profile_id is None else str(profile_id),
                imported=bool(imported) and not include_imported,
            )
            after = (moment, str(event_id))
        if len(rows) < PAGE:
            return


async def simulate(
    fetch: Fetch,
    journey: Journey,
    *,
    since: datetime,
    until: datetime,
    include_imported: bool = False,
) -> Report:
    """Replay the history between `since` and `until` through `journey` (see the module doc)."""
    report = Report(journey.name, since, until)
    ledger = MemoryLedger(fetch, report)
    catalog = catalog_of([(journey, 1, "active")])
    pipeline = Pipeline(ledger, catalog)
    if isinstance(journey.trigger, ScheduleTrigger):
        await pipeline.arm_schedule(catalog.current[journey.name], after=since)

    async def fire_until(moment: datetime) -> None:
        while (due := ledger.next_due(moment)) is not None:
            key, run_at, kind, payload = due
            ledger.now = run_at
            if kind == RUN_TIMER:
                await pipeline.on_run_timer(str(payload["run"]), key, run_at)
            elif kind == INACTIVITY_TIMER:
                await pipeline.on_inactivity(journey.name, str(payload["profile"]), run_at, run_at)
            elif kind == DATE_TIMER:
                await pipeline.on_date(journey.name, str(payload["profile"]), run_at, run_at)
            else:
                await pipeline.on_schedule(payload, run_at, run_at)

    async for event in history(fetch, since, until, include_imported=include_imported):
        await fire_until(event.occurred_at)
        ledger.now = event.occurred_at
        report.events += 1
        await pipeline.on_event(event, event.occurred_at)
    await fire_until(until)
    return report
