"""The ingest domain's part of the write path: requests (`TrackCommand`) and dead letters.

`IngestStore.commit_tracks` is steps 3 and 4 of the architecture for a batch of requests, run
in the writer's transaction: deduplicate client event ids, resolve identities, store events,
sessions and profiles, and enqueue every event's envelope, which the transaction's outbox row
carries. Each database has its own batched statements (`IngestStatements`); the order of steps
lives here only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from beacon import lifecycle
from beacon.core.clock import Clock
from beacon.core.ids import new_id
from beacon.core.sql import Sql, chunks, in_list
from beacon.identity.actions import ConflictPolicy, merges_since, resolve_profiles
from beacon.identity.erasure import erasures_since, subject_digest
from beacon.ingest.commands import DeadLetterCommand, TrackCommand, TrackOutcome
from beacon.ingest.identify import apply_identifies, claim_profiles
from beacon.ingest.plan import IdentityLookups, first_keys, plan_events, plan_identities
from beacon.ingest.statements import IngestStatements
from beacon.ingest.store_postgres import PostgresIngestStatements
from beacon.ingest.store_sqlite import SqliteIngestStatements
from beacon.storage.database import Database
from beacon.storage.partitions import month_start
from beacon.storage.transaction import Tx
from beacon.storage.writer import Writer

CACHE_LIMIT = 200_000
MERGE_POLL_SECONDS = 1.0
MERGE_POLL_OVERLAP = timedelta(seconds=5)  # other processes' clocks and commits may lag
STATEMENTS: dict[str, Callable[[Tx], IngestStatements]] = {
    "sqlite": SqliteIngestStatements,
    "postgresql": PostgresIngestStatements,
}


async def lookup_identities(
    sql: Sql, profile_ids: set[str], session_ids: set[str]
) -> IdentityLookups:
    """Find which claimed profiles exist (following merges) and each session's profile."""
    existing: dict[str, str] = {}
    for batch in chunks(sorted(profile_ids)):
        existing.update(await resolve_profiles(sql, batch))
    sessions: dict[str, str | None] = {}
    for batch in chunks(sorted(session_ids)):
        rows = await sql.fetch(
            f"SELECT id, profile_id FROM sessions WHERE id IN ({in_list(len(batch))})", *batch
        )
        sessions.update((str(row[0]), row[1]) for row in rows)
    return IdentityLookups(existing_profiles=existing, session_profiles=sessions)


class IngestStore:
    """Commits requests and dead letters; remembers which profiles and sessions exist to skip
    lookups (each process its own, learning other processes' merges and erasures)."""

    def __init__(
        self,
        database: Database,
        *,
        clock: Clock,
        conflict_policy: ConflictPolicy = "switch",
    ) -> None:
        self.database = database
        self.clock = clock
        self.conflict_policy = conflict_policy
        self._known_profiles: dict[str, str] = {}  # profile id -> the profile it is now
        self._session_profiles: dict[str, str | None] = {}
        self._merges_seen_at: datetime | None = None
        self._merges_polled = -math.inf

    def register(self, writer: Writer) -> None:
        """Make the writer commit requests and dead letters through this store."""
        writer.handle(TrackCommand, self.commit_tracks, prepare=self.prepare)
        writer.handle(DeadLetterCommand, self.insert_dead_letters)

    async def prepare(self, tracks: Sequence[TrackCommand]) -> None:
        """Make the months of the events about to be stored storable (PostgreSQL partitions)."""
        await self.database.ensure_months(
            {
                month_start(event.occurred_at)
                for command in tracks
                if command.save_events
                for event in command.events
            }
        )

    async def commit_tracks(self, tx: Tx, tracks: Sequence[TrackCommand]) -> list[TrackOutcome]:
        """Store a batch of requests in `tx`; return each request's outcome."""
        statements = STATEMENTS[tx.dialect](tx)
        now = tx.now
        restore_on_rollback(tx, tracks)
        keys = first_keys(tracks)
        fresh = await statements.insert_event_keys(keys) if keys else set()
        # A retried request whose every event is stored already changes nothing (it must not
        # re-create a profile, an identity or a session, e.g. after an erasure).
        live = [c for c in tracks if not is_replay(c, fresh)]
        await claim_profiles(tx.sql, live)
        lookups = await self._lookup(tx.sql, tracks)
        known_sessions = dict(lookups.session_profiles)
        identities = plan_identities(live, lookups, new_id)
        await statements.insert_profiles(identities.new_profiles)
        await statements.insert_sessions(identities.new_sessions)
        if identities.session_links:
            await statements.link_sessions(identities.session_links)
        merges = await apply_identifies(
            tx.sql, live, identities, now=now, policy=self.conflict_policy
        )
        events = plan_events(live, identities, fresh)
        tx.enqueue(message.envelope() for message in events.messages)
        if events.rows:
            await statements.insert_events(events.rows)
        await lifecycle.record(
            tx,
            [
                lifecycle.profile_merged(m.loser, m.survivor, now, imported=m.imported)
                for m in merges
            ],
        )

        def remember() -> None:
            known_sessions.update((s.id, s.profile_id) for s in identities.new_sessions)
            known_sessions.update(identities.session_links)
            self._remember(identities.profile_ids, known_sessions)
            self._follow_merges([(m.loser, m.survivor) for m in merges])

        tx.after_commit(remember)
        placed = dict(zip(map(id, live), events.outcomes, strict=True))
        return [placed.get(id(command)) or replayed(command, lookups) for command in tracks]

    async def insert_dead_letters(self, tx: Tx, rows: Sequence[DeadLetterCommand]) -> list[None]:
        await STATEMENTS[tx.dialect](tx).insert_dead_letters(rows)
        return [None] * len(rows)

    def forget_profiles(self, profile_ids: set[str]) -> None:
        """Drop erased profiles from the caches, so their ids are never taken as existing."""
        for profile_id in [
            p for p, now_is in self._known_profiles.items() if now_is in profile_ids
        ]:
            del self._known_profiles[profile_id]
        for session_id in [s for s, p in self._session_profiles.items() if p in profile_ids]:
            del self._session_profiles[session_id]

    async def _lookup(self, sql: Sql, tracks: Sequence[TrackCommand]) -> IdentityLookups:
        await self._catch_up_on_merges(sql)
        profile_ids = {c.profile_id for c in tracks if c.resolve_profile and c.profile_id}
        session_ids = {c.session_id for c in tracks if c.session_id}
        cached_profiles = {
            p: self._known_profiles[p] for p in profile_ids if p in self._known_profiles
        }
        cached_sessions = {
            s: self._session_profiles[s] for s in session_ids if s in self._session_profiles
        }
        found = await lookup_identities(
            sql, profile_ids - cached_profiles.keys(), session_ids - cached_sessions.keys()
        )
        found.existing_profiles.update(cached_profiles)
        found.session_profiles.update(cached_sessions)
        return found

    def _remember(self, profile_ids: list[str | None], sessions: dict[str, str | None]) -> None:
        if len(self._known_profiles) > CACHE_LIMIT:
            self._known_profiles.clear()
        if len(self._session_profiles) > CACHE_LIMIT:
            self._session_profiles.clear()
        self._known_profiles.update((p, p) for p in profile_ids if p)
        self._session_profiles.update(sessions)

    def _follow_merges(self, merges: list[tuple[str, str]]) -> None:
        """Make cached ids of merged profiles resolve to their survivors."""
        if not merges:
            return
        survivor_of = dict(merges)
        for profile_id, now_is in self._known_profiles.items():
            if now_is in survivor_of:
                self._known_profiles[profile_id] = survivor_of[now_is]
        self._known_profiles.update(survivor_of)
        for session_id, owner in self._session_profiles.items():
            if owner in survivor_of:
                self._session_profiles[session_id] = survivor_of[owner]

    async def _catch_up_on_merges(self, sql: Sql) -> None:
        """Every second, learn merges and erasures other processes made: no cached id goes stale.

        The second is measured on the monotonic clock (a manual clock may stand still); what
        was recorded since is read by the business clock, which stamped the rows.
        """
        polled = time.monotonic()
        if polled - self._merges_polled < MERGE_POLL_SECONDS:
            return
        self._merges_polled = polled
        checked, self._merges_seen_at = self._merges_seen_at, self.clock.now()
        if checked is None:
            return
        since = checked - MERGE_POLL_OVERLAP
        self._follow_merges(await merges_since(sql, since))
        erased = set(await erasures_since(sql, since))
        if erased:
            cached = set(self._known_profiles.values())
            self.forget_profiles({p for p in cached if subject_digest(p) in erased})


def restore_on_rollback(tx: Tx, tracks: Sequence[TrackCommand]) -> None:
    """Undo what a rolled-back transaction did to its requests, so a retry commits them as they
    came (identity work fills in a claimed profile)."""
    saved = [(command, command.profile_id) for command in tracks]

    def restore() -> None:
        for command, profile_id in saved:
            command.profile_id = profile_id

    tx.on_rollback(restore)


def is_replay(command: TrackCommand, fresh: set[str]) -> bool:
    """Whether every event of `command` carries a client id already stored."""
    return bool(command.events) and all(
        e.external_id is not None and e.id not in fresh for e in command.events
    )


def replayed(command: TrackCommand, lookups: IdentityLookups) -> TrackOutcome:
    """The outcome of a request that was entirely a retry: nothing stored, nothing changed."""
    claimed = lookups.existing_profiles.get(command.profile_id or "")
    linked = lookups.session_profiles.get(command.session_id or "")
    return TrackOutcome(
        profile_id=(claimed or linked) if command.resolve_profile else None,
        profile_created=False,
        session_id=command.session_id,
        session_created=False,
        stored_event_ids=[],
        published_event_ids=[],
        duplicate_external_ids=[e.external_id for e in command.events if e.external_id],
    )
