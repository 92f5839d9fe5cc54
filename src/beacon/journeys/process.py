"""What an event, a run's timer and a timed trigger do to journeys: the pipeline around the engine.

`Pipeline` is written once against `Ledger`, what it reads and writes: the worker's ledger is
the database inside one transaction (`ledger.SqlLedger`), the dry run's is memory over stored
history (`simulate`). Both take the same decisions, so a dry run shows what the worker does.

- an event (never an imported one) starts runs of the active journeys it triggers, is offered
  to the profile's active runs that react to its type (waits, exits, goals), resets the
  profile's inactivity triggers and re-arms its date triggers; an event without a profile (a
  restock) goes to the runs waiting for its type whose match values it holds;
- a run's timer (`RUN_TIMER`) is `TimerFired` on that run;
- timed triggers: `INACTIVITY_TIMER` (per journey and profile, moved by each counted event),
  `DATE_TIMER` (per journey and profile, at the trait's next date), `SCHEDULE_TIMER` (per
  journey, at the cron's next firing; each firing starts runs for the segment's members a page
  at a time, a timer per page, so no firing loads everyone at once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from beacon.core import jsonio
from beacon.journeys.catalog import Catalog, Listed
from beacon.journeys.definition import Journey
from beacon.journeys.effects import Effect
from beacon.journeys.engine import advance
from beacon.journeys.entry import NotStarted, PriorRun, start
from beacon.journeys.pacing import FrequencyCap
from beacon.journeys.profiles import ProfileView, SentMessage
from beacon.journeys.runs import Run
from beacon.journeys.stimuli import Cancel, EventArrived, EventSnapshot, Start, Stimulus, TimerFired
from beacon.journeys.times import read_date
from beacon.journeys.triggers import (
    DateTrigger,
    InactivityTrigger,
    ScheduleTrigger,
    date_event,
    date_moment,
    inactivity_event,
    next_scheduled,
    occurrence_attribute,
    scheduled_event,
)
from beacon.segments.attributes import AttributeDefinition
from beacon.segments.values import PropertyPath, lookup, path_text, read_time, time_text

RUN_TIMER = "journey-run"
INACTIVITY_TIMER = "journey-inactivity"
DATE_TIMER = "journey-date"
SCHEDULE_TIMER = "journey-schedule"
FANOUT_PAGE = 500
_TICK = timedelta(microseconds=1)


class Ledger(Protocol):
    """What the pipeline reads and writes (see the module docstring)."""

    async def prior_runs(self, profile_id: str, journey: str) -> Sequence[PriorRun]:
        """The profile's runs of `journey`, any version and status (entry rules read them)."""
        ...

    async def active_runs(self, profile_id: str, journeys: Sequence[str]) -> list[Run]:
        """The profile's pending and active runs of those journeys."""
        ...

    async def waiting_runs(self, event_type: str, match: str) -> list[Run]:
        """Active runs waiting for `event_type` with those match values (`match_text`)."""
        ...

    async def run(self, run_id: str) -> Run | None: ...

    async def profile(self, profile_id: str, journey: Journey) -> ProfileView | None:
        """The profile as `journey` reads it now; None when it is not (erased)."""
        ...

    async def sent(self, profile_id: str, since: datetime) -> list[SentMessage]: ...

    async def occurrence(self, counted: AttributeDefinition, event: EventSnapshot) -> int:
        """How many of the profile's events `counted` counts up to `event`, it included."""
        ...

    async def save(
        self, journey: Journey, before: Run | None, after: Run, effects: Sequence[Effect]
    ) -> None:
        """Store the run's new state and path, and apply `effects`, together."""
        ...

    async def timer_at(self, key: str) -> datetime | None:
        """When the pending timer `key` is due, or None."""
        ...

    async def set_timer(
        self, key: str, kind: str, run_at: datetime, payload: dict[str, Any]
    ) -> None:
        """Schedule timer `key`, replacing a pending one."""
        ...

    async def cancel_timer(self, key: str) -> None: ...

    async def segment_members(self, segment: str, after: str, limit: int) -> list[str]:
        """Up to `limit` members of `segment` whose ids sort after `after`, in id order."""
        ...


def match_text(match: Mapping[str, Any]) -> str:
    """The canonical JSON of a wait's match values: how waiting runs are found by event."""
    return jsonio.dumps_text(dict(sorted(match.items())))


def match_of(paths: Sequence[PropertyPath], properties: Mapping[str, Any]) -> str | None:
    """`match_text` of what an event holds at `paths` (None: it lacks one of them)."""
    values = {path_text(path): lookup(properties, path) for path in paths}
    return None if any(v is None for v in values.values()) else match_text(values)


def inactivity_key(journey: str, profile_id: str) -> str:
    """The profile's inactivity timer for `journey` (the profile first: erasure finds them all
    by prefix)."""
    return f"journey-inactive:{profile_id}:{journey}"


def date_key(journey: str, profile_id: str) -> str:
    return f"journey-date:{profile_id}:{journey}"


def schedule_key(journey: str) -> str:
    return f"journey-schedule:{journey}"


@dataclass
class Pipeline:
    ledger: Ledger
    catalog: Catalog
    default_caps: Sequence[FrequencyCap] = ()

    async def on_event(self, event: EventSnapshot, now: datetime) -> None:
        """Start, move and end runs as `event` says (imported history does nothing)."""
        if event.imported:
            return
        profile_id = event.profile_id
        if profile_id is None:
            await self._offer_unowned(event, now)
            return
        for listed in self.catalog.starting(event.type):
            await self.start(listed, profile_id, event, now)
        watching = [
            name
            for name, version in self.catalog.versions
            if self.catalog.watches(name, version, event.type)
        ]
        if watching:
            for run in await self.ledger.active_runs(profile_id, sorted(set(watching))):
                if self.catalog.watches(run.journey, run.version, event.type):
                    await self.advance(run, EventArrived(event), now)
        await self._arm_inactivity(profile_id, event)
        await self._arm_dates(profile_id, now)

    async def _offer_unowned(self, event: EventSnapshot, now: datetime) -> None:
        for paths in sorted(self.catalog.wait_paths(event.type)):
            match = match_of(paths, event.properties)
            if match is None:
                continue
            for run in await self.ledger.waiting_runs(event.type, match):
                await self.advance(run, EventArrived(event), now)

    async def start(
        self, listed: Listed, profile_id: str, trigger: EventSnapshot, now: datetime
    ) -> Run | None:
        """Start a run of `listed` for the profile if its entry rules let `trigger` start one."""
        journey = listed.journey
        profile = await self.ledger.profile(profile_id, journey)
        if profile is None:
            return None
        counted = occurrence_attribute(journey.trigger, trigger)
        occurrence = None if counted is None else await self.ledger.occurrence(counted, trigger)
        made = start(
            journey,
            version=listed.version,
            profile=profile,
            trigger=trigger,
            existing_runs=await self.ledger.prior_runs(profile_id, journey.name),
            now=now,
            occurrence=occurrence,
        )
        if isinstance(made, NotStarted):
            return None
        sent = await self._sent(journey, profile_id, now)
        result = advance(
            journey,
            made,
            Start(),
            profile=profile,
            now=now,
            sent=sent,
            default_caps=self.default_caps,
        )
        await self.ledger.save(journey, None, result.run, result.effects)
        return result.run

    async def advance(self, run: Run, stimulus: Stimulus, now: datetime) -> None:
        """Apply `stimulus` to `run` and save what changed (a stale stimulus changes nothing)."""
        journey = self.catalog.version(run.journey, run.version)
        if journey is None or run.ended:
            return
        profile = await self.ledger.profile(run.profile_id, journey)
        if profile is None:
            profile, stimulus = ProfileView(run.profile_id), Cancel("profile erased")
        sent = await self._sent(journey, run.profile_id, now)
        result = advance(
            journey,
            run,
            stimulus,
            profile=profile,
            now=now,
            sent=sent,
            default_caps=self.default_caps,
        )
        if result.run != run or result.effects:
            await self.ledger.save(journey, run, result.run, result.effects)

    async def cancel(self, run: Run, reason: str, now: datetime) -> None:
        await self.advance(run, Cancel(reason), now)

    async def on_run_timer(self, run_id: str, key: str, now: datetime) -> None:
        run = await self.ledger.run(run_id)
        if run is not None and not run.ended:
            await self.advance(run, TimerFired(key), now)

    async def on_inactivity(
        self, journey: str, profile_id: str, due: datetime, now: datetime
    ) -> None:
        """The profile had none of the trigger's events since `due` - duration: start a run."""
        listed = self.catalog.active_journey(journey)
        if listed is None or not isinstance(listed.journey.trigger, InactivityTrigger):
            return
        last = due - listed.journey.trigger.duration
        await self.start(listed, profile_id, inactivity_event(journey, profile_id, last, due), now)

    async def on_date(self, journey: str, profile_id: str, due: datetime, now: datetime) -> None:
        """The trait's date came (if the trait still holds it): start a run; arm the next."""
        listed = self.catalog.active_journey(journey)
        if listed is None or not isinstance(listed.journey.trigger, DateTrigger):
            return
        trigger = listed.journey.trigger
        profile = await self.ledger.profile(profile_id, listed.journey)
        if profile is None:
            return
        zone = listed.journey.zone_for(profile.traits)
        if date_moment(trigger, profile.traits, zone, after=due - _TICK) == due:
            day = read_date(lookup(profile.traits, trigger.trait))
            assert day is not None, "a date moment comes from a date"
            event = date_event(journey, profile_id, trigger.trait, day, due)
            await self.start(listed, profile_id, event, now)
        following = date_moment(trigger, profile.traits, zone, after=due)
        if following is not None:
            payload = {"journey": journey, "profile": profile_id}
            await self.ledger.set_timer(
                date_key(journey, profile_id), DATE_TIMER, following, payload
            )

    async def arm_schedule(self, listed: Listed, *, after: datetime) -> None:
        """Schedule the journey's next cron firing after `after`."""
        trigger = listed.journey.trigger
        assert isinstance(trigger, ScheduleTrigger)
        moment = next_scheduled(trigger, listed.journey.zone, after=after)
        payload = {"journey": listed.name}
        await self.ledger.set_timer(schedule_key(listed.name), SCHEDULE_TIMER, moment, payload)

    async def on_schedule(self, payload: Mapping[str, Any], due: datetime, now: datetime) -> None:
        """A cron firing (arm the next) or one page of its members: start their runs."""
        journey = str(payload["journey"])
        listed = self.catalog.active_journey(journey)
        if listed is None or not isinstance(listed.journey.trigger, ScheduleTrigger):
            return
        fired = read_time(payload.get("fired_at")) or due
        if "fired_at" not in payload:
            await self.arm_schedule(listed, after=due)
        after = str(payload.get("after", ""))
        members = await self.ledger.segment_members(
            listed.journey.trigger.segment, after, FANOUT_PAGE
        )
        event = scheduled_event(journey, fired)
        for profile_id in members:
            await self.start(listed, profile_id, event, now)
        if len(members) == FANOUT_PAGE:
            page = {"journey": journey, "fired_at": time_text(fired), "after": members[-1]}
            key = f"{schedule_key(journey)}:{time_text(fired)}:{members[-1]}"
            await self.ledger.set_timer(key, SCHEDULE_TIMER, now, page)

    async def _arm_inactivity(self, profile_id: str, event: EventSnapshot) -> None:
        for listed in self.catalog.inactivity(event.type):
            trigger = listed.journey.trigger
            assert isinstance(trigger, InactivityTrigger)
            key = inactivity_key(listed.name, profile_id)
            due = event.occurred_at + trigger.duration
            pending = await self.ledger.timer_at(key)
            if pending is None or pending < due:  # an older event arriving late moves nothing
                payload = {"journey": listed.name, "profile": profile_id}
                await self.ledger.set_timer(key, INACTIVITY_TIMER, due, payload)

    async def _arm_dates(self, profile_id: str, now: datetime) -> None:
        for listed in self.catalog.dated():
            trigger = listed.journey.trigger
            assert isinstance(trigger, DateTrigger)
            profile = await self.ledger.profile(profile_id, listed.journey)
            if profile is None:
                continue
            zone = listed.journey.zone_for(profile.traits)
            moment = date_moment(trigger, profile.traits, zone, after=now)
            key = date_key(listed.name, profile_id)
            pending = await self.ledger.timer_at(key)
            if moment is None and pending is not None:
                await self.ledger.cancel_timer(key)
            elif moment is not None and pending != moment:
                payload = {"journey": listed.name, "profile": profile_id}
                await self.ledger.set_timer(key, DATE_TIMER, moment, payload)

    async def _sent(self, journey: Journey, profile_id: str, now: datetime) -> list[SentMessage]:
        lookback = journey.send_lookback(self.default_caps)
        if lookback <= timedelta():
            return []
        return await self.ledger.sent(profile_id, now - lookback)
