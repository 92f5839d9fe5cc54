"""The ingest store: commits batches of write commands, each batch in one transaction.

`IngestStore.commit` is the whole write path of the ingest edge (steps 3 and 4 of the
architecture): resolve identities, deduplicate client event ids, store events, sessions and
profiles, and one outbox row holding every event's envelope, all in one transaction. Backends
implement the primitive statements in a `StoreTransaction`; the order of steps lives here only.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from beacon.bus.messages import OutboxBatch
from beacon.core.clock import Clock
from beacon.core.ids import new_id
from beacon.core.sql import Sql, chunks, in_list
from beacon.identity.actions import ConflictPolicy, merges_since, resolve_profiles
from beacon.identity.erasure import erasures_since, subject_digest
from beacon.ingest.commands import (
    DeadLetterCommand,
    OutboxDelete,
    ProfileTouch,
    SqlCommand,
    TrackCommand,
    TrackOutcome,
    WriteCommand,
)
from beacon.ingest.identify import apply_identifies, claim_profiles
from beacon.ingest.plan import (
    EventRow,
    IdentityLookups,
    NewSession,
    first_keys,
    plan_events,
    plan_identities,
)

CACHE_LIMIT = 200_000
MERGE_POLL_SECONDS = 1.0
MERGE_POLL_OVERLAP = timedelta(seconds=5)  # other processes' clocks and commits may lag
# Oldest first, the rows whose envelopes fit the budget (the first row however many it holds).
# The running total reads only the counts: envelopes of rows left for later are never read.
# A row holds at least one envelope, so no more rows than the budget can fit.
STALE_OUTBOX = """
SELECT o.id, o.envelopes
FROM (
    SELECT id, created_at, row_number() OVER w AS n, sum(envelope_count) OVER w AS running
    FROM (
        SELECT id, created_at, envelope_count FROM outbox WHERE created_at < ?
        ORDER BY created_at, id LIMIT ?
    ) AS oldest
    WINDOW w AS (ORDER BY created_at, id)
) AS fit
JOIN outbox AS o ON o.id = fit.id
WHERE fit.n = 1 OR fit.running <= ?
ORDER BY fit.created_at, fit.id
"""


class StoreTransaction(abc.ABC):
    """The statements one ingest transaction runs; every method runs inside it."""

    sql: Sql  # the same transaction, for statements written once for both databases

    async def lookup_identities(
        self, profile_ids: set[str], session_ids: set[str]
    ) -> IdentityLookups:
        """Find which claimed profiles exist (following merges) and each session's profile."""
        existing: dict[str, str] = {}
        for batch in chunks(sorted(profile_ids)):
            existing.update(await resolve_profiles(self.sql, batch))
        sessions: dict[str, str | None] = {}
        for batch in chunks(sorted(session_ids)):
            rows = await self.sql.fetch(
                f"SELECT id, profile_id FROM sessions WHERE id IN ({in_list(len(batch))})", *batch
            )
            sessions.update((str(row[0]), row[1]) for row in rows)
        return IdentityLookups(existing_profiles=existing, session_profiles=sessions)

    @abc.abstractmethod
    async def insert_profiles(self, rows: list[tuple[str, datetime]]) -> None: ...

    @abc.abstractmethod
    async def insert_sessions(self, rows: list[NewSession]) -> None: ...

    @abc.abstractmethod
    async def link_sessions(self, links: dict[str, str]) -> None:
        """Attach profile-less sessions to the profile they now belong to."""

    @abc.abstractmethod
    async def insert_event_keys(self, keys: list[tuple[str, str, str, datetime]]) -> set[str]:
        """Insert client-id keys not yet present; return the event ids whose key was new."""

    @abc.abstractmethod
    async def insert_events(
        self, rows: list[EventRow], outbox: OutboxBatch | None, created_at: datetime
    ) -> None:
        """Insert the events and the outbox row announcing them (either may be empty)."""

    @abc.abstractmethod
    async def insert_dead_letters(self, rows: list[DeadLetterCommand]) -> None: ...

    @abc.abstractmethod
    async def delete_outbox(self, ids: list[str]) -> None: ...

    @abc.abstractmethod
    async def touch_profiles(self, last_seen: dict[str, datetime], now: datetime) -> None: ...


class IngestStore(abc.ABC):
    """Commits write commands; remembers which profiles and sessions exist to skip lookups."""

    def __init__(self, clock: Clock, *, conflict_policy: ConflictPolicy = "switch") -> None:
        self.clock = clock
        self.conflict_policy = conflict_policy
        self.on_committed: Callable[[OutboxBatch], None] | None = None
        self._known_profiles: dict[str, str] = {}  # profile id -> the profile it is now
        self._session_profiles: dict[str, str | None] = {}
        self._merges_seen_at: datetime | None = None

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[StoreTransaction]:
        """Open one transaction; it commits when the block exits without error."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def stale_outbox(self, older_than: datetime, max_envelopes: int) -> list[OutboxBatch]:
        """Return outbox rows created before `older_than`, oldest first (`STALE_OUTBOX`).

        Together they hold at most `max_envelopes` envelopes, or they are one row holding more.
        """

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the database cannot be reached."""

    @staticmethod
    @abc.abstractmethod
    def is_transient(exc: Exception) -> bool:
        """Whether a commit failed for the database's sake (unreachable, locked, deadlocked),
        not for what it was given: the same commit may succeed later."""

    async def prepare_commit(  # noqa: B027 - optional step
        self, tracks: Sequence[TrackCommand], now: datetime
    ) -> None:
        """Prepare storage for what `tracks` may store, before their transaction opens.

        Done inside it, the work could wait for a lock the transaction itself holds (a merge
        moves events, locking `events`).
        """

    async def commit(self, commands: Sequence[WriteCommand]) -> list[Any]:
        """Commit `commands` in one transaction; return one result per command."""
        tracks = [c for c in commands if isinstance(c, TrackCommand)]
        now = self.clock.now()
        await self.prepare_commit(tracks, now)
        async with restored_on_failure(tracks), self.transaction() as tx:
            keys = first_keys(tracks)
            fresh = await tx.insert_event_keys(keys) if keys else set()
            # A retried request whose every event is stored already changes nothing (it must not
            # re-create a profile, an identity or a session, e.g. after an erasure).
            live = [c for c in tracks if not is_replay(c, fresh)]
            await claim_profiles(tx.sql, live)
            lookups = await self._lookup(tx, tracks)
            known_sessions = dict(lookups.session_profiles)
            identities = plan_identities(live, lookups, new_id)
            await tx.insert_profiles(identities.new_profiles)
            await tx.insert_sessions(identities.new_sessions)
            if identities.session_links:
                await tx.link_sessions(identities.session_links)
            merges = await apply_identifies(
                tx.sql, live, identities, now=now, policy=self.conflict_policy
            )
            events = plan_events(live, identities, fresh)
            batch = OutboxBatch(new_id(), [message.envelope() for message in events.messages])
            if events.rows or batch.envelopes:
                await tx.insert_events(events.rows, batch if batch.envelopes else None, now)
            results = await self._apply_other(tx, commands, now)
        known_sessions.update((s.id, s.profile_id) for s in identities.new_sessions)
        known_sessions.update(identities.session_links)
        self._remember(identities.profile_ids, known_sessions)
        self._follow_merges([(m.loser, m.survivor) for m in merges])
        if batch.envelopes and self.on_committed is not None:
            self.on_committed(batch)
        placed = dict(zip(map(id, live), events.outcomes, strict=True))
        for command in tracks:
            results[id(command)] = placed.get(id(command)) or replayed(command, lookups)
        return [results.get(id(c)) for c in commands]

    def forget_profiles(self, profile_ids: set[str]) -> None:
        """Drop erased profiles from the caches, so their ids are never taken as existing."""
        for profile_id in [
            p for p, now_is in self._known_profiles.items() if now_is in profile_ids
        ]:
            del self._known_profiles[profile_id]
        for session_id in [s for s, p in self._session_profiles.items() if p in profile_ids]:
            del self._session_profiles[session_id]

    async def _lookup(self, tx: StoreTransaction, tracks: list[TrackCommand]) -> IdentityLookups:
        await self._catch_up_on_merges(tx)
        profile_ids = {c.profile_id for c in tracks if c.resolve_profile and c.profile_id}
        session_ids = {c.session_id for c in tracks if c.session_id}
        cached_profiles = {
            p: self._known_profiles[p] for p in profile_ids if p in self._known_profiles
        }
        cached_sessions = {
            s: self._session_profiles[s] for s in session_ids if s in self._session_profiles
        }
        found = await tx.lookup_identities(
            profile_ids - cached_profiles.keys(), session_ids - cached_sessions.keys()
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

    async def _catch_up_on_merges(self, tx: StoreTransaction) -> None:
        """Every second, learn merges and erasures other processes made: no cached id goes stale."""
        now = self.clock.now()
        checked = self._merges_seen_at
        if checked is not None and (now - checked).total_seconds() < MERGE_POLL_SECONDS:
            return
        self._merges_seen_at = now
        if checked is None:
            return
        since = checked - MERGE_POLL_OVERLAP
        self._follow_merges(await merges_since(tx.sql, since))
        erased = set(await erasures_since(tx.sql, since))
        if erased:
            cached = set(self._known_profiles.values())
            self.forget_profiles({p for p in cached if subject_digest(p) in erased})

    @staticmethod
    async def _apply_other(
        tx: StoreTransaction, commands: Sequence[WriteCommand], now: datetime
    ) -> dict[int, Any]:
        """Run the commands other than tracks; return the results of `SqlCommand`s by id."""
        dead = [c for c in commands if isinstance(c, DeadLetterCommand)]
        if dead:
            await tx.insert_dead_letters(dead)
        relayed = [i for c in commands if isinstance(c, OutboxDelete) for i in c.ids]
        if relayed:
            await tx.delete_outbox(relayed)
        touched: dict[str, datetime] = {}
        for command in commands:
            if isinstance(command, ProfileTouch):
                for profile_id, seen in command.last_seen.items():
                    if profile_id not in touched or touched[profile_id] < seen:
                        touched[profile_id] = seen
        if touched:
            await tx.touch_profiles(touched, now)
        return {
            id(command): await command.work(tx.sql, now)
            for command in commands
            if isinstance(command, SqlCommand)
        }


@asynccontextmanager
async def restored_on_failure(tracks: list[TrackCommand]) -> AsyncIterator[None]:
    """Undo what a failed transaction did to its commands, so a retry commits them as they came.

    Identity work fills in a claimed profile and appends `profile.merged` events; kept after a
    rollback, a retry (the group committer's, one request at a time) would store them twice.
    """
    saved = [(command, command.profile_id, len(command.events)) for command in tracks]
    try:
        yield
    except BaseException:
        for command, profile_id, count in saved:
            command.profile_id = profile_id
            del command.events[count:]
        raise


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
