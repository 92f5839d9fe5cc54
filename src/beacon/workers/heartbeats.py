"""Worker heartbeats: every process running consumers says every few seconds that it lives.

A row of `worker_heartbeats` per process (its role, the consumers it runs, when it started and
last beat); a process counts as live while its last beat is under three intervals old. A clean
stop deletes the row; rows of processes that died are deleted an hour after their last beat.
Heartbeats are wall-clock times (never the manual test clock): they say whether a process runs.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from beacon.bus.base import sleep_unless_stopped
from beacon.core import jsonio
from beacon.core.clock import Clock
from beacon.core.ids import new_id
from beacon.core.sql import Sql
from beacon.storage.transaction import Tx
from beacon.storage.writer import Writer
from beacon.workers.models import WorkerHeartbeat

log = structlog.get_logger()

LIVE_INTERVALS = 3  # beats a process may miss before it counts as gone
FORGET_AFTER = timedelta(hours=1)

BEAT = (
    "INSERT INTO worker_heartbeats (id, role, names, started_at, heartbeat_at)"
    " VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
)


def worker_id() -> str:
    """A name for this process: its host and pid (for people), and a suffix no other has."""
    return f"{socket.gethostname()}-{os.getpid()}-{new_id()[-8:]}"


class Heartbeat:
    """Beats for this process every `interval` seconds until stopped, then removes its row."""

    def __init__(
        self,
        *,
        id: str | None = None,
        writer: Writer,
        clock: Clock,
        role: str,
        names: Sequence[str],
        interval: float,
    ) -> None:
        self.id = id or worker_id()
        self.role = role
        self.names = list(names)
        self.interval = interval
        self._writer = writer
        self._clock = clock
        self._started_at = clock.now()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._writer.run(self._beat)
            except Exception:
                log.warning("worker_heartbeat_failed", worker=self.id, exc_info=True)
            await sleep_unless_stopped(stop, self.interval)
        try:
            await self._writer.run(self._forget)
        except Exception:
            log.warning("worker_heartbeat_not_removed", worker=self.id, exc_info=True)

    async def _beat(self, tx: Tx) -> None:
        now = self._clock.now()
        await tx.sql.execute(
            BEAT, self.id, self.role, jsonio.dumps_text(self.names), self._started_at, now
        )
        await tx.sql.execute(
            "DELETE FROM worker_heartbeats WHERE heartbeat_at < ?", now - FORGET_AFTER
        )

    async def _forget(self, tx: Tx) -> None:
        await tx.sql.execute("DELETE FROM worker_heartbeats WHERE id = ?", self.id)


async def is_live(sql: Sql, worker: str, *, now: datetime, interval: float) -> bool:
    """Whether the process `worker` beat less than `LIVE_INTERVALS` intervals before `now`."""
    rows = await sql.fetch("SELECT heartbeat_at FROM worker_heartbeats WHERE id = ?", worker)
    if not rows:
        return False
    beat = rows[0][0]
    at = datetime.fromisoformat(beat) if isinstance(beat, str) else beat
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    return bool(at >= now - timedelta(seconds=LIVE_INTERVALS * interval))


async def live_workers(
    *, session: AsyncSession, now: datetime, interval: float
) -> Sequence[WorkerHeartbeat]:
    """The processes whose last beat is under `LIVE_INTERVALS` intervals old, oldest first."""
    since = now - timedelta(seconds=LIVE_INTERVALS * interval)
    query = (
        select(WorkerHeartbeat)
        .where(WorkerHeartbeat.heartbeat_at >= since)
        .order_by(WorkerHeartbeat.started_at)
    )
    return (await session.scalars(query)).all()
