"""`Database`: the transactions of the write path on one database, and reads beside it."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any

from beacon.bus.messages import OutboxBatch
from beacon.core.clock import Clock
from beacon.storage.transaction import Tx

# Oldest first, the rows whose envelopes fit the budget (the first row however many it holds).
# The running total reads only the counts: envelopes of rows left for later are never read.
# A row holds at least one envelope, so no more rows than the budget can fit.
# `after` is the empty text or a condition placing rows after the relay's last row read.
STALE_OUTBOX = """
SELECT o.id, o.envelopes, o.created_at
FROM (
    SELECT id, created_at, row_number() OVER w AS n, sum(envelope_count) OVER w AS running
    FROM (
        SELECT id, created_at, envelope_count FROM outbox WHERE created_at < ? {after}
        ORDER BY created_at, id LIMIT ?
    ) AS oldest
    WINDOW w AS (ORDER BY created_at, id)
) AS fit
JOIN outbox AS o ON o.id = fit.id
WHERE fit.n = 1 OR fit.running <= ?
ORDER BY fit.created_at, fit.id
"""


class Database(abc.ABC):
    """Opens the write path's transactions; `on_committed` hears of every outbox row written."""

    dialect: str

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.on_committed: Callable[[OutboxBatch], None] | None = None

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the database cannot be reached."""

    @abc.abstractmethod
    def _begin(self, now: datetime) -> AbstractAsyncContextManager[Tx]:
        """Open a transaction; commit when the block exits cleanly, else roll back (calling
        `Tx.rolled_back`) and raise."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One transaction at the clock's time; its outbox rows are handed on once committed."""
        async with self._begin(self.clock.now()) as tx:
            yield tx
            await tx.flush_outbox()
        tx.committed()
        if self.on_committed is not None:
            for row in tx.outbox_rows:
                self.on_committed(row)

    @abc.abstractmethod
    async def read(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run a query outside the write path's transactions (`core.sql` text)."""

    async def stale_outbox(
        self, older_than: datetime, max_envelopes: int, after: OutboxBatch | None = None
    ) -> list[OutboxBatch]:
        """Return outbox rows created before `older_than`, oldest first (`STALE_OUTBOX`), and
        after the row `after` (one this returned before) if given.

        Together they hold at most `max_envelopes` envelopes, or they are one row holding more.
        """
        args: list[Any] = [older_than]
        if after is None or after.created_at is None:
            sql = STALE_OUTBOX.format(after="")
        else:
            place = "AND (created_at > ? OR (created_at = ? AND id > ?))"
            sql = STALE_OUTBOX.format(after=place)
            args += [after.created_at, after.created_at, after.id]
        rows = await self.read(sql, *args, max_envelopes, max_envelopes)
        return [OutboxBatch.decode(str(row[0]), row[1], utc(row[2])) for row in rows]

    async def ensure_months(self, months: set[date]) -> None:  # noqa: B027 - optional step
        """Make sure events of these months can be stored (PostgreSQL: monthly partitions).

        Called before the transaction that needs them opens: creating a partition locks
        `events`, and a transaction moving events (a merge) would then wait on itself.
        """

    def recover(self, exc: Exception) -> bool:
        """Whether a failed commit was due to a state this process has now repaired (a
        partition another process dropped), so the same commit may run once more."""
        return False

    @staticmethod
    @abc.abstractmethod
    def is_transient(exc: Exception) -> bool:
        """Whether a commit failed for the database's sake (unreachable, locked, deadlocked),
        not for what it was given: the same commit may succeed later."""


def utc(value: datetime | str) -> datetime:
    """A time read back with raw SQL: SQLite gives the text `core.db.sqlite_time` wrote."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC)
