"""The outbox relay: moves committed outbox rows to the bus, then deletes them.

Each outbox row holds the envelopes of one committed transaction (an `OutboxBatch`).
Fast path: the store hands over what it just committed and the relay publishes it at once.
Slow path: a periodic sweep publishes rows older than `stale_after` (left by a crash, a bus
outage or another process that died), and at start-up every row left from before. A row is
deleted only after `Bus.publish` returned for all its envelopes, so every committed message
reaches the bus at least once; consumers deduplicate on the envelope id.

Both paths publish rows oldest first, as many at once as fit `max_envelopes` envelopes (a row
alone may hold more: a bulk import commits thousands of events per row), so what a sweep reads
and holds is bounded by envelopes, not by rows of any size.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from beacon.bus.base import Bus
from beacon.bus.messages import OutboxBatch
from beacon.core.clock import Clock
from beacon.core.sql import Sql, chunks, in_list

log = structlog.get_logger()

MAX_ENVELOPES = 1000
# (older_than, max_envelopes) -> the oldest rows fitting the budget, or the oldest row alone.
FetchStale = Callable[[datetime, int], Awaitable[list[OutboxBatch]]]
Acknowledge = Callable[[list[str]], Awaitable[object]]


class OutboxRelay:
    def __init__(
        self,
        bus: Bus,
        *,
        fetch_stale: FetchStale,
        acknowledge: Acknowledge,
        clock: Clock,
        sweep_interval: float = 5.0,
        stale_after: float = 10.0,
        max_envelopes: int = MAX_ENVELOPES,
        on_relayed: Callable[[int], None] | None = None,
    ) -> None:
        if max_envelopes < 1:
            raise ValueError("max_envelopes must be at least 1")
        self.bus = bus
        self._fetch_stale = fetch_stale
        self._acknowledge = acknowledge
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._stale_after = timedelta(seconds=stale_after)
        self._max_envelopes = max_envelopes
        self._pending: deque[OutboxBatch] = deque()
        self._wake = asyncio.Event()
        self._on_relayed = on_relayed

    def hand_off(self, batch: OutboxBatch) -> None:
        """Queue an outbox row the store has just committed."""
        self._pending.append(batch)
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; start with everything a previous run left behind."""
        await self._sweep(self._clock.now())
        last_sweep = self._clock.now()
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                waking = asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    {waking, stopping},
                    timeout=self._sweep_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waking.cancel()
                self._wake.clear()
                await self.flush()
                now = self._clock.now()
                if not self._pending and (now - last_sweep).total_seconds() >= self._sweep_interval:
                    await self._sweep(now - self._stale_after)
                    last_sweep = now
        finally:
            stopping.cancel()
        await self.flush()

    async def flush(self) -> None:
        """Publish everything handed over so far."""
        while self._pending:
            batch = [self._pending.popleft()]
            total = len(batch[0].envelopes)
            while self._pending and total + len(self._pending[0].envelopes) <= self._max_envelopes:
                total += len(self._pending[0].envelopes)
                batch.append(self._pending.popleft())
            if not await self._publish(batch):
                # The rows stay in the outbox; the sweep publishes them once the bus is back.
                self._pending.clear()
                return

    async def _sweep(self, older_than: datetime) -> None:
        """Publish rows created before `older_than` until none is left (or publishing fails)."""
        while True:
            try:
                batch = await self._fetch_stale(older_than, self._max_envelopes)
            except Exception:
                log.exception("outbox_sweep_failed")
                return
            # A short batch does not mean the end: the next row may be one too big to fit.
            if not batch or not await self._publish(batch):
                return

    async def _publish(self, rows: Sequence[OutboxBatch]) -> bool:
        envelopes = [envelope for row in rows for envelope in row.envelopes]
        try:
            await self.bus.publish(envelopes)
            await self._acknowledge([row.id for row in rows])
        except Exception:
            log.exception("outbox_relay_failed", rows=len(rows), envelopes=len(envelopes))
            return False
        if self._on_relayed is not None:
            self._on_relayed(len(envelopes))
        return True


async def delete_outbox_rows(tx: _HasSql, ids: list[str]) -> None:
    """Delete outbox rows that were relayed (in a transaction of the write path)."""
    for batch in chunks(ids):
        await tx.sql.execute(f"DELETE FROM outbox WHERE id IN ({in_list(len(batch))})", *batch)


class _HasSql(Protocol):
    sql: Sql
