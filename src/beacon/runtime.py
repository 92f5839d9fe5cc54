"""The running parts of a Beacon process, started and stopped in order.

`Runtime` owns the database engine, the ingest store with its group committer, the bus, the
outbox relay and (in embedded mode) the consumers. The server and `beacon worker` build one.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from beacon.bus.base import Bus
from beacon.bus.factory import create_bus
from beacon.bus.memory import MemoryBus
from beacon.bus.messages import EVENTS_TOPIC
from beacon.bus.outbox import OutboxRelay
from beacon.core.clock import Clock
from beacon.core.db import create_engine
from beacon.core.metrics import Metrics
from beacon.core.sql import SqlWork
from beacon.events.event_types import EventTypeCatalog
from beacon.events.retention import RetentionBusy, purge_expired_events
from beacon.identity import worker as last_seen
from beacon.ingest.commands import OutboxDelete, ProfileTouch, SqlCommand, WriteCommand
from beacon.ingest.commit import GroupCommitter
from beacon.ingest.pipeline import IngestEdge
from beacon.ingest.store import IngestStore
from beacon.ingest.store_postgres import PostgresIngestStore
from beacon.ingest.store_sqlite import SqliteIngestStore
from beacon.settings import Settings
from beacon.sources.service import SourceCatalog

Role = Literal["server", "worker"]
RETENTION_FIRST_PASS_DELAY = 30.0  # seconds after start-up, so start-up itself stays quick

log = structlog.get_logger()


def create_store(settings: Settings, clock: Clock) -> IngestStore:
    if settings.is_sqlite:
        return SqliteIngestStore(
            settings.sqlite_path,
            clock=clock,
            synchronous=settings.sqlite_synchronous,
            conflict_policy=settings.identity_conflict_policy,
        )
    return PostgresIngestStore(
        settings.database_url,
        clock=clock,
        pool_size=settings.database_pool_size,
        conflict_policy=settings.identity_conflict_policy,
    )


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    role: Role
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self.engine: AsyncEngine = create_engine(self.settings)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.store = create_store(self.settings, self.clock)
        self.committer: GroupCommitter[WriteCommand] = GroupCommitter(
            self.store.commit,
            max_batch=self.settings.commit_batch_max,
            on_batch=self.metrics.commit_batch_size.observe,
            is_transient=self.store.is_transient,
        )
        self.bus: Bus = create_bus(
            self.settings.bus_url,
            partitions=self.settings.bus_partitions,
            prefix=self.settings.bus_prefix,
        )
        self.sources = SourceCatalog(
            self.sessions, ttl=self.settings.cache_ttl_seconds, clock=self.clock
        )
        self.event_types = EventTypeCatalog(
            self.sessions, ttl=self.settings.cache_ttl_seconds, clock=self.clock
        )
        self.relay = OutboxRelay(
            self.bus,
            fetch_stale=self.store.stale_outbox,
            acknowledge=self._acknowledge,
            clock=self.clock,
            sweep_interval=self.settings.relay_sweep_seconds,
            stale_after=2 * self.settings.relay_sweep_seconds,
            on_relayed=self.metrics.bus_relayed.inc,
        )
        self.edge = IngestEdge(
            settings=self.settings,
            clock=self.clock,
            sources=self.sources,
            event_types=self.event_types,
            committer=self.committer,
            metrics=self.metrics,
            sessions=self.sessions,
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._retention: asyncio.Task[None] | None = None

    @property
    def consumes(self) -> bool:
        """Whether this process runs the consumers: workers do; servers only on the memory bus."""
        return self.role == "worker" or isinstance(self.bus, MemoryBus)

    async def _acknowledge(self, ids: list[str]) -> None:
        await self.committer.submit(OutboxDelete(ids))

    async def run_sql(self, work: SqlWork) -> Any:
        """Run domain work in the single write path (see `core.sql.SqlWriter`)."""
        return await self.committer.submit(SqlCommand(work))

    async def _write_last_seen(self, latest: dict[str, datetime]) -> None:
        await self.committer.submit(ProfileTouch(latest))

    async def start(self) -> None:
        await self.store.start()
        self.committer.start()
        if self.consumes:
            self.bus.subscribe(
                last_seen.SUBSCRIBER,
                EVENTS_TOPIC,
                last_seen.last_seen_consumer(self._write_last_seen),
            )
        if self.role == "server":
            self.store.on_committed = self.relay.hand_off
            self._tasks.append(asyncio.create_task(self.relay.run(self._stop), name="outbox-relay"))
            self._retention = asyncio.create_task(self._run_retention(), name="retention")
        if self.consumes:
            self._tasks.append(
                asyncio.create_task(self.bus.consume(self._stop), name="bus-consume")
            )

    async def stop(self) -> None:
        """Stop taking work, relay what was committed, then close connections."""
        self._stop.set()
        if self._retention is not None:  # a pass stops between two statements
            self._retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention
        for task in self._tasks:
            await task
        await self.committer.stop()
        await self.store.close()
        await self.bus.close()
        await self.engine.dispose()

    async def _run_retention(self) -> None:
        """Purge expired events shortly after start-up, then every retention interval."""
        interval = self.settings.retention_interval_seconds
        delay = min(RETENTION_FIRST_PASS_DELAY, interval)
        while not await self._stopped_within(delay):
            delay = interval
            try:
                report = await purge_expired_events(
                    engine=self.engine,
                    now=self.clock.now(),
                    default_days=self.settings.retention_days,
                    batch_size=self.settings.retention_batch_size,
                )
            except RetentionBusy:
                log.info("retention_skipped", reason="another process is running a pass")
            except Exception:
                log.exception("retention_failed")
            else:
                log.info(
                    "retention_pass",
                    events_deleted=report.events_deleted,
                    partitions_dropped=list(report.partitions_dropped),
                    event_keys_deleted=report.event_keys_deleted,
                    dead_letters_deleted=report.dead_letters_deleted,
                )

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        return self._stop.is_set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def ping_database(self) -> None:
        await self.store.ping()
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    def session(self) -> AsyncSession:
        return self.sessions()
