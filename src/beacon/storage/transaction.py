"""`Tx`: one transaction of the write path, as every domain's writes see it."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any

from beacon.bus.messages import Envelope, OutboxBatch
from beacon.core.ids import new_id
from beacon.core.sql import Sql


class Tx(abc.ABC):
    """One open transaction: SQL for both databases, its time, and the outbox.

    `now` is the clock's time when the transaction opened: everything it writes shares it.
    Envelopes given to `enqueue` are written to the outbox in this same transaction and
    published only after it commits (the transactional outbox): a rolled-back write never
    publishes anything.
    """

    dialect: str
    sql: Sql
    conn: Any  # the driver's connection (sqlite3 or asyncpg), for a domain's batched statements

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.outbox_rows: list[OutboxBatch] = []
        self._envelopes: list[Envelope] = []
        self._after_commit: list[Callable[[], None]] = []
        self._on_rollback: list[Callable[[], None]] = []

    def enqueue(self, envelopes: Iterable[Envelope]) -> None:
        """Publish `envelopes` once this transaction has committed."""
        self._envelopes.extend(envelopes)

    def claim_outbox(self) -> OutboxBatch | None:
        """Take the envelopes enqueued so far as one outbox row the caller writes itself in this
        transaction (in a statement of its own, saving a round trip); None if there are none."""
        if not self._envelopes:
            return None
        batch = OutboxBatch(new_id(), self._envelopes)
        self._envelopes = []
        self.outbox_rows.append(batch)
        return batch

    async def flush_outbox(self) -> None:
        """Write what is still enqueued as one outbox row (the database calls it before COMMIT)."""
        batch = self.claim_outbox()
        if batch is not None:
            await self.write_outbox(batch)

    @abc.abstractmethod
    async def write_outbox(self, batch: OutboxBatch) -> None:
        """Insert `batch` as an outbox row."""

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the transaction has committed (caches, hand-offs)."""
        self._after_commit.append(callback)

    def on_rollback(self, callback: Callable[[], None]) -> None:
        """Call `callback` if the transaction rolls back (undo what it did to in-memory jobs)."""
        self._on_rollback.append(callback)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """Undo only this block's writes, enqueued messages and callbacks if it raises."""
        marks = (len(self._envelopes), len(self._after_commit), len(self._on_rollback))
        try:
            async with self._savepoint():
                yield
        except BaseException:
            del self._envelopes[marks[0] :]
            del self._after_commit[marks[1] :]
            del self._on_rollback[marks[2] :]
            raise

    @abc.abstractmethod
    def _savepoint(self) -> AbstractAsyncContextManager[None]:
        """The database's savepoint: released on a clean exit, rolled back to on an error."""

    def committed(self) -> None:
        for callback in self._after_commit:
            callback()

    def rolled_back(self) -> None:
        for callback in reversed(self._on_rollback):
            callback()
