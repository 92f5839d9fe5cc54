"""Inactivity and date triggers armed for the people Beacon already knows, when a journey is
applied (in the transaction storing its version).

Events arm these triggers as they arrive (`process`); a journey applied today would otherwise
see only the people whose next event comes after it. So applying one also arms:

- an inactivity trigger, for each person with one of its event types within its duration: the
  timer is due `duration` after their last such event in the stored history. People quiet for
  longer than that already are *not* started at once (a new journey never messages the whole
  dormant base the moment it is applied); their next event and silence arm them as usual;
- a date trigger, for each person whose trait holds a date: the next moment it fires.

Timers already pending are left as they are (scheduling is idempotent by key). The history
read is one indexed query over the duration's events; the date traits, every profile's traits
a page at a time.
"""

from __future__ import annotations

from datetime import datetime

from beacon.core.sql import in_list
from beacon.identity.actions import db_json
from beacon.journeys.catalog import Listed
from beacon.journeys.process import DATE_TIMER, INACTIVITY_TIMER, date_key, inactivity_key
from beacon.journeys.triggers import DateTrigger, InactivityTrigger, date_moment
from beacon.segments.membership import resolve_profiles
from beacon.storage.database import utc
from beacon.storage.transaction import Tx
from beacon.timers import store as timers
from beacon.timers.store import Timer

PROFILES_PAGE = 5000


async def arm_known_people(tx: Tx, listed: Listed) -> int:
    """Arm `listed`'s inactivity or date trigger for the people already known; return how
    many timers were asked for (see the module docstring)."""
    if listed.status != "active":
        return 0
    trigger = listed.journey.trigger
    if isinstance(trigger, InactivityTrigger):
        return await _arm_inactivity(tx, listed, trigger)
    if isinstance(trigger, DateTrigger):
        return await _arm_dates(tx, listed, trigger)
    return 0


async def _arm_inactivity(tx: Tx, listed: Listed, trigger: InactivityTrigger) -> int:
    types = trigger.event_types
    rows = await tx.sql.fetch(
        "SELECT profile_id, MAX(occurred_at) FROM events"
        f" WHERE type IN ({in_list(len(types))}) AND occurred_at > ?"
        " AND profile_id IS NOT NULL GROUP BY profile_id",
        *types,
        tx.now - trigger.duration,
    )
    survivors = await resolve_profiles(tx.sql, (str(row[0]) for row in rows))
    last: dict[str, datetime] = {}
    for profile_id, occurred_at in rows:
        survivor = survivors.get(str(profile_id))  # none: the person was erased
        moment = utc(occurred_at)
        if survivor is not None and (survivor not in last or moment > last[survivor]):
            last[survivor] = moment
    await timers.schedule_many(
        tx,
        (
            Timer(
                inactivity_key(listed.name, profile_id),
                INACTIVITY_TIMER,
                at + trigger.duration,
                {"journey": listed.name, "profile": profile_id},
            )
            for profile_id, at in sorted(last.items())
        ),
    )
    return len(last)


async def _arm_dates(tx: Tx, listed: Listed, trigger: DateTrigger) -> int:
    armed, after = 0, ""
    while True:
        rows = await tx.sql.fetch(
            "SELECT id, traits FROM profiles WHERE id > ? AND merged_into IS NULL"
            " ORDER BY id LIMIT ?",
            after,
            PROFILES_PAGE,
        )
        if not rows:
            return armed
        due: list[Timer] = []
        for profile_id, raw in rows:
            traits = db_json(raw) or {}
            zone = listed.journey.zone_for(traits)
            moment = date_moment(trigger, traits, zone, after=tx.now)
            if moment is not None:
                key = date_key(listed.name, str(profile_id))
                payload = {"journey": listed.name, "profile": str(profile_id)}
                due.append(Timer(key, DATE_TIMER, moment, payload))
        await timers.schedule_many(tx, due)
        armed += len(due)
        after = str(rows[-1][0])
