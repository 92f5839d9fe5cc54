"""The worker's `Ledger`: runs, their paths and effects in the database, inside one `Tx`.

Every effect is applied in the transaction that stores the run's new state, so they commit
together or not at all: a delivery request through messaging's `request_delivery` (with the
effect's idempotency key; a journey's webhook step is a request on the `webhook` channel whose
content holds url, method, headers and body), trait updates through identity's `edit_traits`,
emitted events as system events of the profile (`lifecycle.record`, their id derived from the
idempotency key), timers through `timers.store`, conversions and sends (what caps count) in the
journeys' own tables. On PostgreSQL a run is read `FOR UPDATE`: a timer firing in one process
and an event in another never both move the same run from the same state.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beacon import lifecycle
from beacon.core import jsonio
from beacon.core.sql import in_list
from beacon.deliveries.requests import DeliveryRequest, request_delivery
from beacon.identity.actions import edit_traits
from beacon.identity.traits import TraitOp
from beacon.journeys import effects as fx
from beacon.journeys.definition import Journey
from beacon.journeys.effects import Effect
from beacon.journeys.entry import PriorRun
from beacon.journeys.process import RUN_TIMER, date_key, inactivity_key, match_text
from beacon.journeys.profiles import ProfileView, SentMessage
from beacon.journeys.runs import Run
from beacon.journeys.stimuli import EventSnapshot
from beacon.journeys.views import SegmentReads, count_occurrences, read_profile
from beacon.segments.attributes import AttributeDefinition
from beacon.storage.transaction import Tx
from beacon.timers import store as timers
from beacon.timers.store import stored_time

LIVE = ("pending", "active")
_EMITTED = uuid.UUID("0b7e3c1a-5d2f-4e8b-9a61-c4f2d8e7b903")

INSERT_RUN = (
    "INSERT INTO journey_runs (id, journey, version, profile_id, key, status, step,"
    " waiting_event_type, waiting_match, state, started_at, updated_at, ended_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_RUN = (
    "UPDATE journey_runs SET status = ?, step = ?, waiting_event_type = ?, waiting_match = ?,"
    " state = ?, updated_at = ?, ended_at = ? WHERE id = ?"
)
UPSERT_PATH = (
    "INSERT INTO journey_run_path (run_id, seq, profile_id, step, entered_at, left_at, why)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, seq) DO UPDATE SET"
    " left_at = excluded.left_at, why = excluded.why"
)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What entry rules read of a stored run, without its state."""

    id: str
    key: str | None
    status: str
    started_at: datetime


def run_of(state: Any) -> Run:
    return Run.from_json(jsonio.loads(state) if isinstance(state, str | bytes) else state)


def waiting_columns(run: Run) -> tuple[str | None, str | None]:
    """The run's `waiting_event_type` and `waiting_match`: set while it waits for an event."""
    waiting = run.waiting
    if run.ended or waiting is None or waiting.kind != "event" or waiting.event_type is None:
        return None, None
    return waiting.event_type, match_text(waiting.match)


async def insert_run(tx: Tx, run: Run) -> None:
    event_type, match = waiting_columns(run)
    await tx.sql.execute(
        INSERT_RUN,
        run.id,
        run.journey,
        run.version,
        run.profile_id,
        run.key,
        run.status,
        run.step,
        event_type,
        match,
        jsonio.dumps_text(run.as_json()),
        run.started_at,
        tx.now,
        run.ended_at,
    )


async def update_run(tx: Tx, run: Run) -> None:
    event_type, match = waiting_columns(run)
    await tx.sql.execute(
        UPDATE_RUN,
        run.status,
        run.step,
        event_type,
        match,
        jsonio.dumps_text(run.as_json()),
        tx.now,
        run.ended_at,
        run.id,
    )


async def write_path(tx: Tx, before: Run | None, after: Run) -> None:
    """Store the steps of `after`'s history that are new or changed since `before`."""
    first = 0 if before is None else before.dropped + max(len(before.history) - 1, 0)
    rows = []
    for index, entry in enumerate(after.history):
        seq = after.dropped + index
        if seq >= first:
            left = entry.left_at
            rows.append(
                (after.id, seq, after.profile_id, entry.step, entry.entered_at, left, entry.why)
            )
    if rows:
        await tx.sql.executemany(UPSERT_PATH, rows)


class SqlLedger:
    """The pipeline's ledger over the database in the transaction `tx`."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self.lock = " FOR UPDATE" if tx.dialect == "postgresql" else ""
        self.profiles: dict[tuple[str, str, int], ProfileView | None] = {}

    async def prior_runs(self, profile_id: str, journey: str) -> Sequence[PriorRun]:
        rows = await self.tx.sql.fetch(
            "SELECT id, key, status, started_at FROM journey_runs"
            " WHERE profile_id = ? AND journey = ?",
            profile_id,
            journey,
        )
        return [RunSummary(str(i), k, str(s), stored_time(t)) for i, k, s, t in rows]

    async def active_runs(self, profile_id: str, journeys: Sequence[str]) -> list[Run]:
        rows = await self.tx.sql.fetch(
            "SELECT state FROM journey_runs WHERE profile_id = ?"
            f" AND journey IN ({in_list(len(journeys))}) AND status IN ('pending', 'active')"
            f" ORDER BY started_at, id{self.lock}",
            profile_id,
            *journeys,
        )
        return [run_of(row[0]) for row in rows]

    async def waiting_runs(self, event_type: str, match: str) -> list[Run]:
        rows = await self.tx.sql.fetch(
            "SELECT state FROM journey_runs WHERE waiting_event_type = ? AND waiting_match = ?"
            f" ORDER BY started_at, id{self.lock}",
            event_type,
            match,
        )
        return [run_of(row[0]) for row in rows]

    async def run(self, run_id: str) -> Run | None:
        rows = await self.tx.sql.fetch(
            f"SELECT state FROM journey_runs WHERE id = ?{self.lock}", run_id
        )
        return run_of(rows[0][0]) if rows else None

    async def profile(self, profile_id: str, journey: Journey) -> ProfileView | None:
        # Read once per journey version and transaction; a trait update of this transaction
        # forgets them (`_forget_profile`).
        key = (profile_id, journey.name, id(journey))
        if key not in self.profiles:
            self.profiles[key] = await read_profile(self.tx.sql.fetch, profile_id, journey)
        return self.profiles[key]

    async def sent(self, profile_id: str, since: datetime) -> list[SentMessage]:
        rows = await self.tx.sql.fetch(
            "SELECT channel, sent_at, journey FROM journey_sends"
            " WHERE profile_id = ? AND sent_at > ? ORDER BY sent_at",
            profile_id,
            since,
        )
        return [SentMessage(str(c), stored_time(at), str(j)) for c, at, j in rows]

    async def occurrence(self, counted: AttributeDefinition, event: EventSnapshot) -> int:
        return await count_occurrences(self.tx.sql.fetch, counted, event)

    async def save(
        self, journey: Journey, before: Run | None, after: Run, effects: Sequence[Effect]
    ) -> None:
        if before is None:
            await insert_run(self.tx, after)
        else:
            await update_run(self.tx, after)
        await write_path(self.tx, before, after)
        for effect in effects:
            await self.apply(effect)

    async def apply(self, effect: Effect) -> None:
        """Apply one effect in the transaction (see the module docstring)."""
        tx = self.tx
        if isinstance(effect, fx.RequestDelivery):
            await self._deliver(
                effect.profile_id,
                effect.channel,
                effect.idempotency_key,
                effect.journey,
                effect.template,
                None if effect.content is None else dict(effect.content),
                dict(effect.variables),
            )
        elif isinstance(effect, fx.CallWebhook):
            run = await self.run(effect.run_id)
            assert run is not None, "a webhook is called by a stored run"
            content = {
                "url": effect.url,
                "method": effect.method,
                "headers": dict(effect.headers),
                "body": jsonio.dumps_text(effect.body),
            }
            await self._deliver(
                run.profile_id, "webhook", effect.idempotency_key, run.journey, None, content, {}
            )
        elif isinstance(effect, fx.UpdateTraits):
            ops = [TraitOp("set", name, value) for name, value in effect.set.items()]
            ops += [TraitOp("increment", name, value) for name, value in effect.increment.items()]
            ops += [TraitOp("unset", name) for name in effect.unset]
            await edit_traits(tx, profile_id=effect.profile_id, ops=ops)
            self.profiles = {k: v for k, v in self.profiles.items() if k[0] != effect.profile_id}
        elif isinstance(effect, fx.EmitEvent):
            event_id = str(uuid.uuid5(_EMITTED, effect.idempotency_key))
            emitted = lifecycle.SystemEvent(
                effect.type, effect.profile_id, dict(effect.properties), tx.now, id=event_id
            )
            await lifecycle.record(tx, [emitted])
        elif isinstance(effect, fx.ScheduleTimer):
            payload = {"run": effect.run_id}
            await timers.schedule(
                tx, key=effect.key, kind=RUN_TIMER, run_at=effect.run_at, payload=payload
            )
        elif isinstance(effect, fx.CancelTimer):
            await timers.cancel(tx, key=effect.key)
        elif isinstance(effect, fx.RecordConversion):
            await tx.sql.execute(
                "INSERT INTO journey_conversions (run_id, journey, profile_id, event_id,"
                " converted_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                effect.run_id,
                effect.journey,
                effect.profile_id,
                effect.event_id,
                effect.converted_at,
            )
        # SendSkipped and RunEnded: the run's state and path already say so.

    async def _deliver(
        self,
        profile_id: str,
        channel: str,
        key: str,
        journey: str,
        template: str | None,
        content: dict[str, Any] | None,
        variables: dict[str, Any],
    ) -> None:
        request = DeliveryRequest(
            profile_id=profile_id,
            channel=channel,
            idempotency_key=key,
            requested_by=f"journey:{journey}",
            template=template,
            content=content,
            variables=variables,
        )
        if await request_delivery(self.tx, request) is not None:
            await self.tx.sql.execute(
                "INSERT INTO journey_sends (idempotency_key, profile_id, channel, journey, sent_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
                key,
                profile_id,
                channel,
                journey,
                self.tx.now,
            )

    async def timer_at(self, key: str) -> datetime | None:
        found = await timers.pending_timer(self.tx.sql.fetch, key=key)
        return None if found is None else found.run_at

    async def set_timer(
        self, key: str, kind: str, run_at: datetime, payload: dict[str, Any]
    ) -> None:
        await timers.cancel(self.tx, key=key)
        await timers.schedule(self.tx, key=key, kind=kind, run_at=run_at, payload=payload)

    async def cancel_timer(self, key: str) -> None:
        await timers.cancel(self.tx, key=key)

    async def segment_members(self, segment: str, after: str, limit: int) -> list[str]:
        return await SegmentReads(self.tx.sql.fetch).members(segment, after, limit)


async def forget_profiles(tx: Tx, profile_ids: Sequence[str]) -> int:
    """Erase the people's runs, paths, conversions and sends, and cancel their timers; return
    how many runs went."""
    if not profile_ids:
        return 0
    marks = in_list(len(profile_ids))
    rows = await tx.sql.fetch(
        f"SELECT state FROM journey_runs WHERE profile_id IN ({marks})", *profile_ids
    )
    for (state,) in rows:
        run = run_of(state)
        if run.waiting is not None:
            await timers.cancel(tx, key=run.waiting.timer_key)
    for table in ("journey_run_path", "journey_conversions", "journey_sends", "journey_runs"):
        await tx.sql.execute(f"DELETE FROM {table} WHERE profile_id IN ({marks})", *profile_ids)
    for profile_id in profile_ids:
        for prefix in (inactivity_key("", profile_id), date_key("", profile_id)):
            await tx.sql.execute("DELETE FROM timers WHERE key LIKE ?", f"{prefix}%")
    return len(rows)
