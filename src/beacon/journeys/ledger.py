"""The worker's `Ledger`: runs, their paths and effects in the database, inside one `Tx`.

Every effect is applied in the transaction that stores the run's new state (`applying`), so
they commit together or not at all. A batch's reads are gathered (`preload`: its people, their
earlier runs, the runs its timers name) and the runs it changed are written together by
`flush`, which the caller runs before the transaction ends: until then the ledger answers from
what it holds, so a run saved by one event of a batch is the run the next event sees. On
PostgreSQL runs are read `FOR UPDATE`: a timer firing in one process and an event in another
never both move the same run from the same state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beacon.core import jsonio
from beacon.core.sql import chunks, in_list
from beacon.deliveries.requests import DeliveryRequest, request_deliveries
from beacon.journeys import effects as fx
from beacon.journeys.applying import Send, apply_effect, delivery_request
from beacon.journeys.definition import Journey
from beacon.journeys.effects import Effect
from beacon.journeys.entry import PriorRun
from beacon.journeys.process import match_text
from beacon.journeys.profiles import ProfileView, SentMessage
from beacon.journeys.runs import Run
from beacon.journeys.stimuli import EventSnapshot
from beacon.journeys.views import Person, SegmentReads, count_occurrences, read_people, view_of
from beacon.segments.attributes import AttributeDefinition
from beacon.storage.transaction import Tx
from beacon.timers import store as timers
from beacon.timers.store import stored_time

LIVE = ("pending", "active")

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
INSERT_SEND = (
    "INSERT INTO journey_sends (idempotency_key, profile_id, channel, journey, sent_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING"
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


def path_rows(before: Run | None, after: Run) -> list[tuple[Any, ...]]:
    """The steps of `after`'s history that are new or changed since `before`."""
    first = 0 if before is None else before.dropped + max(len(before.history) - 1, 0)
    rows = []
    for index, entry in enumerate(after.history):
        seq = after.dropped + index
        if seq >= first:
            step, entered, left, why = entry.step, entry.entered_at, entry.left_at, entry.why
            rows.append((after.id, seq, after.profile_id, step, entered, left, why))
    return rows


def _inserted(run: Run, now: datetime) -> tuple[Any, ...]:
    state = jsonio.dumps_text(run.as_json())
    head = (run.id, run.journey, run.version, run.profile_id, run.key, run.status, run.step)
    return (*head, *waiting_columns(run), state, run.started_at, now, run.ended_at)


def _updated(run: Run, now: datetime) -> tuple[Any, ...]:
    state = jsonio.dumps_text(run.as_json())
    return (run.status, run.step, *waiting_columns(run), state, now, run.ended_at, run.id)


class HeldRuns:
    """The newest state of runs a ledger holds, found by id, by person and by what they wait
    for: each event of a batch looks up its own, never scans every run held."""

    def __init__(self) -> None:
        self.by_id: dict[str, Run] = {}
        self.by_profile: dict[str, dict[str, None]] = {}
        self.by_wait: dict[tuple[str | None, str | None], dict[str, None]] = {}

    def __contains__(self, run_id: str) -> bool:
        return run_id in self.by_id

    def get(self, run_id: str) -> Run | None:
        return self.by_id.get(run_id)

    def hold(self, run: Run) -> None:
        """Make `run` the newest state held of it."""
        before = self.by_id.get(run.id)
        if before is not None:
            self.by_wait.get(waiting_columns(before), {}).pop(run.id, None)
        self.by_id[run.id] = run
        self.by_profile.setdefault(run.profile_id, {})[run.id] = None
        columns = waiting_columns(run)
        if columns[0] is not None:
            self.by_wait.setdefault(columns, {})[run.id] = None

    def of_profile(self, profile_id: str) -> list[Run]:
        return [self.by_id[run_id] for run_id in self.by_profile.get(profile_id, {})]

    def live(self, profile_id: str, journeys: Sequence[str]) -> list[Run]:
        """The person's pending and active runs of `journeys`, oldest first."""
        held = self.of_profile(profile_id)
        found = [run for run in held if run.journey in journeys and run.status in LIVE]
        return sorted(found, key=lambda run: (run.started_at, run.id))

    def waiting(self, event_type: str, match: str) -> list[Run]:
        """The runs waiting for `event_type` with those match values, oldest first."""
        found = [self.by_id[run_id] for run_id in self.by_wait.get((event_type, match), {})]
        return sorted(found, key=lambda run: (run.started_at, run.id))


class SqlLedger:
    """The pipeline's ledger over the database in the transaction `tx` (call `flush`)."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self.lock = " FOR UPDATE" if tx.dialect == "postgresql" else ""
        self.people: dict[str, Person | None] = {}
        self.views: dict[tuple[str, int], ProfileView | None] = {}
        self.prior: dict[tuple[str, str], list[PriorRun]] = {}
        self.runs = HeldRuns()  # the newest state of every run read or saved
        self.stored: set[str] = set()  # of those, the ones the database has a row of
        self.dirty: dict[str, None] = {}  # runs to write, in the order they changed
        self.paths: list[tuple[Any, ...]] = []
        self.sends: dict[str, list[Send]] = {}  # by profile
        self.requests: list[DeliveryRequest] = []  # stored by `flush`, a batch at a time

    async def preload(self, profile_ids: Iterable[str], journeys: Sequence[str]) -> None:
        """Read the people of a batch, and their runs of `journeys`, in a few queries."""
        wanted = sorted({p for p in profile_ids if p not in self.people})
        found = await read_people(self.tx.sql.fetch, wanted)
        self.people.update({p: found.get(p) for p in wanted})
        if not wanted or not journeys:
            return
        for chunk in chunks(wanted):
            rows = await self.tx.sql.fetch(
                "SELECT profile_id, journey, id, key, status, started_at FROM journey_runs"
                f" WHERE profile_id IN ({in_list(len(chunk))})"
                f" AND journey IN ({in_list(len(journeys))})",
                *chunk,
                *journeys,
            )
            for profile_id in chunk:
                for journey in journeys:
                    self.prior.setdefault((profile_id, journey), [])
            for profile_id, journey, run_id, key, status, started in rows:
                summary = RunSummary(str(run_id), key, str(status), stored_time(started))
                self.prior.setdefault((str(profile_id), str(journey)), []).append(summary)

    async def preload_runs(self, run_ids: Iterable[str]) -> None:
        """Read the runs a batch of timers names, and their people."""
        wanted = sorted({r for r in run_ids if r not in self.runs})
        for chunk in chunks(wanted):
            self._known(
                await self.tx.sql.fetch(
                    f"SELECT state FROM journey_runs WHERE id IN ({in_list(len(chunk))})"
                    f" ORDER BY id{self.lock}",
                    *chunk,
                )
            )
        await self.preload((r.profile_id for r in self.runs.by_id.values()), ())

    async def prior_runs(self, profile_id: str, journey: str) -> Sequence[PriorRun]:
        key = (profile_id, journey)
        if key not in self.prior:
            rows = await self.tx.sql.fetch(
                "SELECT id, key, status, started_at FROM journey_runs"
                " WHERE profile_id = ? AND journey = ?",
                profile_id,
                journey,
            )
            self.prior[key] = [RunSummary(str(i), k, str(s), stored_time(t)) for i, k, s, t in rows]
        return self.prior[key]

    async def active_runs(self, profile_id: str, journeys: Sequence[str]) -> list[Run]:
        rows = await self.tx.sql.fetch(
            "SELECT state FROM journey_runs WHERE profile_id = ?"
            f" AND journey IN ({in_list(len(journeys))}) AND status IN ('pending', 'active')"
            f" ORDER BY started_at, id{self.lock}",
            profile_id,
            *journeys,
        )
        self._known(rows)
        return self.runs.live(profile_id, journeys)

    async def waiting_runs(self, event_type: str, match: str) -> list[Run]:
        rows = await self.tx.sql.fetch(
            "SELECT state FROM journey_runs WHERE waiting_event_type = ? AND waiting_match = ?"
            f" ORDER BY started_at, id{self.lock}",
            event_type,
            match,
        )
        self._known(rows)
        return self.runs.waiting(event_type, match)

    async def run(self, run_id: str) -> Run | None:
        if run_id not in self.runs:
            self._known(
                await self.tx.sql.fetch(
                    f"SELECT state FROM journey_runs WHERE id = ?{self.lock}", run_id
                )
            )
        return self.runs.get(run_id)

    def _known(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Remember runs read from the database (a state saved since stays the newer)."""
        for (state,) in rows:
            run = run_of(state)
            self.stored.add(run.id)
            if run.id not in self.runs:
                self.runs.hold(run)

    async def profile(self, profile_id: str, journey: Journey) -> ProfileView | None:
        key = (profile_id, id(journey))
        if key not in self.views:
            if profile_id not in self.people:
                await self.preload([profile_id], ())
            person = self.people[profile_id]
            self.views[key] = (
                None
                if person is None
                else await view_of(self.tx.sql.fetch, profile_id, person, journey)
            )
        return self.views[key]

    async def sent(self, profile_id: str, since: datetime) -> list[SentMessage]:
        rows = await self.tx.sql.fetch(
            "SELECT channel, sent_at, journey FROM journey_sends"
            " WHERE profile_id = ? AND sent_at > ? ORDER BY sent_at",
            profile_id,
            since,
        )
        found = [SentMessage(str(c), stored_time(at), str(j)) for c, at, j in rows]
        pending = [s for s in self.sends.get(profile_id, []) if s.sent_at > since]
        return found + [SentMessage(s.channel, s.sent_at, s.journey) for s in pending]

    async def occurrence(self, counted: AttributeDefinition, event: EventSnapshot) -> int:
        return await count_occurrences(self.tx.sql.fetch, counted, event)

    async def save(
        self, journey: Journey, before: Run | None, after: Run, effects: Sequence[Effect]
    ) -> None:
        if before is None and (after.profile_id, after.journey) in self.prior:
            summary = RunSummary(after.id, after.key, after.status, after.started_at)
            self.prior[(after.profile_id, after.journey)].append(summary)
        self.runs.hold(after)
        self.dirty.pop(after.id, None)
        self.dirty[after.id] = None
        self.paths += path_rows(before, after)
        for effect in effects:
            request = delivery_request(effect, after)
            if request is None:
                await apply_effect(self.tx, effect)
            else:
                self.requests.append(request)
                key, channel = request.idempotency_key, request.channel
                send = Send(key, after.profile_id, channel, after.journey, self.tx.now)
                self.sends.setdefault(after.profile_id, []).append(send)
            if isinstance(effect, fx.UpdateTraits):  # read the person again
                self.people.pop(effect.profile_id, None)
                self.views = {k: v for k, v in self.views.items() if k[0] != effect.profile_id}

    async def flush(self) -> None:
        """Write the runs, path steps, delivery requests and sends saved since the last flush.

        A send whose idempotency key was requested before (a batch handled again) is no send:
        it is dropped here, as its request is."""
        tx, now = self.tx, self.tx.now
        stored = await request_deliveries(tx, self.requests)
        pairs = zip(self.requests, stored, strict=True)
        requested = {request.idempotency_key for request, stored_id in pairs if stored_id}
        sends = [s for held in self.sends.values() for s in held if s.idempotency_key in requested]
        changed = [self.runs.by_id[run_id] for run_id in self.dirty]
        new = [run for run in changed if run.id not in self.stored]
        old = [run for run in changed if run.id in self.stored]
        if new:
            await tx.sql.executemany(INSERT_RUN, [_inserted(run, now) for run in new])
        if old:
            await tx.sql.executemany(UPDATE_RUN, [_updated(run, now) for run in old])
        if self.paths:
            await tx.sql.executemany(UPSERT_PATH, self.paths)
        if sends:
            rows = [
                (s.idempotency_key, s.profile_id, s.channel, s.journey, s.sent_at) for s in sends
            ]
            await tx.sql.executemany(INSERT_SEND, rows)
        self.stored.update(run.id for run in new)
        self.dirty, self.paths, self.sends, self.requests = {}, [], {}, []

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
