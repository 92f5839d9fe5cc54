"""The outbox relay: moves committed outbox rows to the bus, and deletes them once handled.

Each outbox row holds the envelopes of one committed transaction (an `OutboxBatch`).
Fast path: the store hands over what it just committed and the relay publishes it at once.
Slow path: a sweep publishes rows older than `stale_after` (left by a crash, a bus outage, an
import or another process that died), and at start-up every row left from before. The sweep is
the periodic job `outbox-sweep` (registered by the runtime, run once across all processes on
the timers): where the relay runs, its loop sweeps between two publications; elsewhere (a
`beacon worker`) `sweep` walks the outbox itself.

A row is deleted only once the bus's receipt for it is settled: at once on Redis (the stream
keeps it), on the memory bus once every consumer handled (or dead-lettered) its envelopes. The
relay does not wait for that before publishing more: published rows are "in flight" until then,
and sweeps skip them. So every committed message reaches every consumer at least once (a crash
leaves the rows, and the next start publishes them again); consumers deduplicate.

Both paths publish rows oldest first, as many at once as fit `max_envelopes` envelopes (a row
alone may hold more: a bulk import commits thousands of events per row), so what a sweep reads
and holds is bounded by envelopes, not by rows of any size. When the bus is full (the memory
bus's queues), `publish` waits; rows handed over meanwhile queue up to `max_pending` envelopes,
then the relay stops taking hand-offs and catches up from the outbox instead: it walks the
outbox oldest first, again and again, until a walk finds nothing to publish and nothing was
committed during it; then hand-offs resume. Rows are thus always published in commit order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from beacon.bus.base import Bus, Receipt, sleep_unless_stopped
from beacon.bus.messages import OutboxBatch
from beacon.core.clock import Clock
from beacon.core.sql import Sql, chunks, in_list

log = structlog.get_logger()

MAX_ENVELOPES = 1000
MAX_PENDING = 20_000  # envelopes handed over and not yet published before the relay catches up
STOP_GRACE_S = 10.0  # how long a stopping relay waits for receipts before leaving rows behind
END_OF_TIME = datetime(9999, 1, 1, tzinfo=UTC)
# (older_than, max_envelopes, after) -> the oldest rows after `after` fitting the budget, or
# the oldest such row alone.
FetchStale = Callable[[datetime, int, OutboxBatch | None], Awaitable[list[OutboxBatch]]]
Acknowledge = Callable[[list[str]], Awaitable[object]]


class OutboxRelay:
    def __init__(
        self,
        bus: Bus,
        *,
        fetch_stale: FetchStale,
        acknowledge: Acknowledge,
        clock: Clock,
        sweep_interval: float = 5.0,  # the wait after a walk of the outbox that failed
        stale_after: float = 10.0,
        max_envelopes: int = MAX_ENVELOPES,
        max_pending: int = MAX_PENDING,
        on_relayed: Callable[[int], None] | None = None,
    ) -> None:
        if min(max_envelopes, max_pending) < 1:
            raise ValueError("max_envelopes and max_pending must be at least 1")
        self.bus = bus
        self._fetch_stale = fetch_stale
        self._acknowledge = acknowledge
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._stale_after = timedelta(seconds=stale_after)
        self._max_envelopes = max_envelopes
        self._max_pending = max_pending
        self._pending: deque[OutboxBatch] = deque()
        self._pending_envelopes = 0
        # Hand-offs are left in the outbox until a walk of it catches up (and at start-up).
        self._catching_up = True
        self._handed_off = 0  # hand-offs so far: a walk is clean only if none came during it
        self._in_flight: set[str] = set()  # published rows whose receipt is not settled
        self._fetching = False
        self._acknowledged: set[str] = set()  # rows deleted while a fetch ran
        self._receipts: dict[asyncio.Task[None], Receipt] = {}
        self._handled: list[str] = []  # rows whose receipt is settled: to delete
        self._deleter: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._on_relayed = on_relayed
        self._running = False
        self._sweeps: list[asyncio.Future[None]] = []  # sweeps asked of the running loop

    @property
    def caught_up(self) -> bool:
        """Whether hand-offs are published at once (not at start-up, nor after falling behind,
        until a walk of the outbox has caught up)."""
        return not self._catching_up

    def hand_off(self, batch: OutboxBatch) -> None:
        """Take an outbox row the store has just committed."""
        self._handed_off += 1
        self._wake.set()
        if self._catching_up:
            return
        if self._pending and self._pending_envelopes + len(batch.envelopes) > self._max_pending:
            log.warning("outbox_relay_behind", pending_envelopes=self._pending_envelopes)
            self._catch_up_later()
            return
        self._pending.append(batch)
        self._pending_envelopes += len(batch.envelopes)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; start with everything a previous run left behind."""
        self._running = True
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                if self._catching_up:
                    await self._catch_up(stop)
                    self._swept()  # a walk of the whole outbox: more than a sweep
                    continue
                waking = asyncio.create_task(self._wake.wait())
                await asyncio.wait({waking, stopping}, return_when=asyncio.FIRST_COMPLETED)
                waking.cancel()
                self._wake.clear()
                await self.flush()
                if self._sweeps and not self._pending and not self._catching_up:
                    await self._walk(self._clock.now() - self._stale_after)
                    self._swept()
        finally:
            stopping.cancel()
            self._running = False
            self._swept()
        if not self._catching_up:
            await self.flush()
        await self.settle(timeout=STOP_GRACE_S)

    async def sweep(self) -> None:
        """Publish the rows older than `stale_after` that nothing is publishing (the periodic
        job `outbox-sweep`): by the running relay's loop, between two publications, or here
        when this process runs no relay."""
        if not self._running:
            await self._walk(self._clock.now() - self._stale_after)
            await self.settle(timeout=STOP_GRACE_S)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sweeps.append(done)
        self._wake.set()
        await done

    def _swept(self) -> None:
        for done in self._sweeps:
            if not done.done():
                done.set_result(None)
        self._sweeps.clear()

    async def flush(self) -> None:
        """Publish everything handed over so far."""
        while self._pending and not self._catching_up:
            batch = [self._pending.popleft()]
            total = len(batch[0].envelopes)
            while self._pending and total + len(self._pending[0].envelopes) <= self._max_envelopes:
                total += len(self._pending[0].envelopes)
                batch.append(self._pending.popleft())
            self._pending_envelopes -= total
            if not await self._publish(batch):
                # Published later from the outbox, in order with what is handed over meanwhile.
                self._catch_up_later()

    async def settle(self, *, timeout: float | None = None) -> None:
        """Wait until every published row's receipt is settled and its row deleted (or for
        `timeout` seconds, after which unsettled rows are left in the outbox)."""
        if self._receipts:
            _, late = await asyncio.wait(set(self._receipts), timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self._deleter is not None:
            await self._deleter

    def _catch_up_later(self) -> None:
        self._catching_up = True
        self._pending.clear()
        self._pending_envelopes = 0
        self._wake.set()

    async def _catch_up(self, stop: asyncio.Event) -> None:
        """Walk the whole outbox until a walk publishes nothing and nothing was committed
        meanwhile: then every committed row is published, and hand-offs may resume."""
        while not stop.is_set():
            handed_off = self._handed_off
            published = await self._walk(END_OF_TIME)
            if published is None:
                await sleep_unless_stopped(stop, self._sweep_interval)
            elif published == 0 and self._handed_off == handed_off:
                self._catching_up = False
                return

    async def _walk(self, older_than: datetime) -> int | None:
        """Publish the rows created before `older_than` that are not in flight, oldest first;
        return how many, or None if reading or publishing failed."""
        after: OutboxBatch | None = None
        published = 0
        while True:
            self._fetching = True
            try:
                rows = await self._fetch_stale(older_than, self._max_envelopes, after)
            except Exception:
                log.exception("outbox_sweep_failed")
                return None
            finally:
                self._fetching = False
            if not rows:
                return published
            after = rows[-1]
            # Rows deleted while the fetch ran may be in it: they must not be published again.
            skip = self._in_flight | self._acknowledged
            self._acknowledged.clear()
            fresh = [row for row in rows if row.id not in skip]
            if fresh:
                if not await self._publish(fresh):
                    return None
                published += len(fresh)

    async def _publish(self, rows: Sequence[OutboxBatch]) -> bool:
        envelopes = [envelope for row in rows for envelope in row.envelopes]
        try:
            receipt = await self.bus.publish(envelopes)
        except Exception:
            log.exception("outbox_relay_failed", rows=len(rows), envelopes=len(envelopes))
            return False
        ids = [row.id for row in rows]
        self._in_flight.update(ids)
        task = asyncio.create_task(self._delete_once_handled(receipt, ids))
        self._receipts[task] = receipt
        task.add_done_callback(lambda done: self._receipts.pop(done, None))
        if self._on_relayed is not None:
            self._on_relayed(len(envelopes))
        return True

    async def _delete_once_handled(self, receipt: Receipt, ids: list[str]) -> None:
        try:
            handled = await asyncio.shield(receipt)
        except asyncio.CancelledError:  # given up on at stop: the rows stay
            self._in_flight.difference_update(ids)
            raise
        if not handled:  # the bus stopped first: the rows stay, for a later walk
            self._in_flight.difference_update(ids)
            return
        self._handled.extend(ids)
        if self._deleter is None or self._deleter.done():
            self._deleter = asyncio.create_task(self._delete_handled())

    async def _delete_handled(self) -> None:
        """Delete the rows every consumer has, all those settled meanwhile in one go."""
        while self._handled:
            ids, self._handled = self._handled, []
            try:
                await self._acknowledge(ids)
                if self._fetching:
                    self._acknowledged.update(ids)
            except Exception:
                # The rows stay: a walk publishes them again, and consumers deduplicate.
                log.exception("outbox_acknowledge_failed", rows=len(ids))
            finally:
                self._in_flight.difference_update(ids)


async def delete_outbox_rows(tx: _HasSql, ids: list[str]) -> None:
    """Delete outbox rows that were relayed (in a transaction of the write path)."""
    for batch in chunks(ids):
        await tx.sql.execute(f"DELETE FROM outbox WHERE id IN ({in_list(len(batch))})", *batch)


class _HasSql(Protocol):
    sql: Sql
