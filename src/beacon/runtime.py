"""The running parts of a Beacon process, started and stopped in order.

`Runtime` builds the platform (database, writer, bus, outbox relay), lets every domain register
its write handlers and its workers, and starts what the process's role runs: a server relays
its outbox and serves the ingest edge; consumers and periodic jobs run in the server on the
embedded set-up (memory bus), else in `beacon worker` processes, which relay what they commit.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from beacon.bus.base import Bus
from beacon.bus.factory import create_bus
from beacon.bus.memory import MemoryBus
from beacon.bus.outbox import OutboxRelay, delete_outbox_rows
from beacon.core.clock import Clock, SystemClock
from beacon.core.db import create_engine
from beacon.core.metrics import Metrics
from beacon.deliveries import worker as deliveries
from beacon.events import retention
from beacon.events.event_types import EventTypeCatalog
from beacon.identity import worker as last_seen
from beacon.identity.sections import ProfileSections
from beacon.ingest.pipeline import IngestEdge
from beacon.ingest.store import IngestStore
from beacon.journeys import routes as journey_routes
from beacon.journeys import worker as journeys
from beacon.platform import Platform
from beacon.segments import routes as segment_routes
from beacon.segments import worker as segments
from beacon.settings import Settings
from beacon.sources.service import SourceCatalog
from beacon.storage.factory import create_database
from beacon.storage.writer import Writer
from beacon.timers.clock import ManualClock, clock_of
from beacon.timers.metrics import TimerMetrics
from beacon.timers.runner import TimerRunner
from beacon.workers import idempotency
from beacon.workers.heartbeats import Heartbeat, worker_id
from beacon.workers.registry import Consumer, PeriodicJob, Registry
from beacon.workers.runner import Backoff, ConsumerRunner

# A command (`beacon consumers replay`) starts only the write path, for handlers to write with.
Role = Literal["server", "worker", "command"]
Register = Callable[[Registry, Platform], None]

# Every domain's `register(registry, platform)`: its consumers, periodic jobs and timer kinds.
DOMAINS: tuple[Register, ...] = (
    idempotency.register,
    last_seen.register,
    retention.register,
    segments.register,
    journeys.register,
    deliveries.register,
)

log = structlog.get_logger()


def create_writer(
    settings: Settings, clock: Clock, *, metrics: Metrics | None = None
) -> tuple[Writer, IngestStore]:
    """The write path of a process on the settings' database, with every domain's job kinds
    (and ingest's store, whose caches the admin API must tell of erasures)."""
    database = create_database(settings, clock)
    writer = Writer(
        database,
        max_batch=settings.commit_batch_max,
        on_batch=None if metrics is None else metrics.commit_batch_size.observe,
    )
    store = IngestStore(database, clock=clock, conflict_policy=settings.identity_conflict_policy)
    store.register(writer)
    return writer, store


@asynccontextmanager
async def write_path(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Writer]:
    """A started write path for a command-line write (`beacon import`, `profiles erase`), which
    commits with `Writer.commit`: a server may be running on the same database meanwhile.

    Its clock (`writer.database.clock`) is `clock`, else the deployment's (`BEACON_CLOCK`): a
    manual one is read from the database and followed while the command runs."""
    clock = clock or clock_of(settings)
    writer, _ = create_writer(settings, clock)
    await writer.database.start()
    try:
        if isinstance(clock, ManualClock):
            await clock.start(writer.database, writer)
        yield writer
    finally:
        if isinstance(clock, ManualClock):
            await clock.stop()
        await writer.database.close()


def load_plugins(modules: list[str]) -> list[Register]:
    """The `register` functions of the modules named by `BEACON_PLUGINS`: consumers, periodic
    jobs and timer kinds of the operator's own, registered like a domain's."""
    registers: list[Register] = []
    for name in modules:
        module = importlib.import_module(name)
        register = getattr(module, "register", None)
        if not callable(register):
            raise ValueError(f"plugin {name!r} has no register(registry, platform) function")
        registers.append(register)
    return registers


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    role: Role
    metrics: Metrics = field(default_factory=Metrics)
    consumer_names: tuple[str, ...] = ()  # the consumers to run (`beacon worker NAMES`); all if ()

    def __post_init__(self) -> None:
        self.engine: AsyncEngine = create_engine(self.settings)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.writer, self.store = create_writer(self.settings, self.clock, metrics=self.metrics)
        self.database = self.writer.database
        self.bus: Bus = create_bus(
            self.settings.bus_url,
            partitions=self.settings.bus_partitions,
            prefix=self.settings.bus_prefix,
            memory_capacity=self.settings.bus_memory_capacity,
        )
        self.process_id = worker_id()  # its heartbeat's id: others can tell whether it lives
        self.platform = Platform(
            settings=self.settings,
            clock=self.clock,
            engine=self.engine,
            database=self.database,
            writer=self.writer,
            bus=self.bus,
            metrics=self.metrics,
            process_id=self.process_id,
        )
        self.registry = Registry()
        # What other domains show on a profile (`GET /api/profiles/{id}`), below which they sit.
        self.profile_sections = ProfileSections()
        segment_routes.add_profile_sections(self.profile_sections, self.platform)
        journey_routes.add_profile_sections(self.profile_sections, self.platform)
        for register in (*DOMAINS, *load_plugins(self.settings.plugins)):
            register(self.registry, self.platform)
        unknown = sorted(set(self.consumer_names) - set(self.registry.consumers))
        if unknown:
            raise ValueError(
                f"unknown consumer{'s' if len(unknown) > 1 else ''} {', '.join(unknown)};"
                f" known: {', '.join(sorted(self.registry.consumers))}"
            )
        # Cache lifetimes are operational: real time, even when business time stands still.
        self.sources = SourceCatalog(
            self.sessions, ttl=self.settings.cache_ttl_seconds, clock=SystemClock()
        )
        self.event_types = EventTypeCatalog(
            self.sessions, ttl=self.settings.cache_ttl_seconds, clock=SystemClock()
        )
        self.relay = OutboxRelay(
            self.bus,
            fetch_stale=self.database.stale_outbox,
            acknowledge=self._acknowledge,
            clock=self.clock,
            sweep_interval=self.settings.relay_sweep_seconds,
            stale_after=2 * self.settings.relay_sweep_seconds,
            on_relayed=self.metrics.bus_relayed.inc,
        )
        sweep_every = timedelta(seconds=self.settings.relay_sweep_seconds)
        self.registry.periodic(
            PeriodicJob("outbox-sweep", sweep_every, self.relay.sweep, first_after=sweep_every)
        )
        self.edge = IngestEdge(
            settings=self.settings,
            clock=self.clock,
            sources=self.sources,
            event_types=self.event_types,
            writer=self.writer,
            metrics=self.metrics,
            sessions=self.sessions,
        )
        self.timers = TimerRunner(
            writer=self.writer,
            clock=self.clock,
            kinds={kind.kind: kind.fire for kind in self.registry.timer_kinds.values()},
            periodic=list(self.registry.periodic_jobs.values()),
            metrics=TimerMetrics(self.metrics.registry),
            batch_size=self.settings.timers_batch_size,
            poll_seconds=self.settings.timers_poll_seconds,
        )
        if isinstance(self.clock, ManualClock):
            self.clock.on_change(self.timers.wake)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def consumes(self) -> bool:
        """Whether this process runs the consumers: workers do; servers only on the memory bus."""
        return self.role == "worker" or (self.role == "server" and isinstance(self.bus, MemoryBus))

    @property
    def running_consumers(self) -> list[Consumer]:
        """The consumers this process runs when it consumes: those named, else all."""
        names = self.consumer_names or tuple(self.registry.consumers)
        return [self.registry.consumers[name] for name in names]

    async def _acknowledge(self, ids: list[str]) -> None:
        await self.writer.run(lambda tx: delete_outbox_rows(tx, ids))

    async def start(self) -> None:
        await self.database.start()
        if isinstance(self.clock, ManualClock):  # read before anything stamps a time
            await self.clock.start(self.database, self.writer)
        self.writer.start()
        if self.role in ("server", "worker"):
            # A worker relays what its consumers and timers commit, as a server does: left to
            # a server's sweep, each hop of a pipeline (a send, its event, the webhook) would
            # wait for it.
            self.database.on_committed = self.relay.hand_off
            self._tasks.append(asyncio.create_task(self.relay.run(self._stop), name="outbox-relay"))
        if self.consumes:
            self._start_consumers()
            self._start_timers()

    def _start_consumers(self) -> None:
        """Subscribe this process's consumers through the runner (retries, dead letters, a
        polite stop), start delivering to them, and heartbeat while they run."""
        backoff = Backoff(
            base=self.settings.consumer_retry_base_seconds,
            cap=self.settings.consumer_retry_max_seconds,
        )
        consumers = self.running_consumers
        for consumer in consumers:
            runner = ConsumerRunner(
                consumer, writer=self.writer, backoff=backoff, stop=self._stop, metrics=self.metrics
            )
            self.bus.subscribe(consumer.name, consumer.topic, runner)
        self._tasks.append(asyncio.create_task(self.bus.consume(self._stop), name="bus-consume"))
        heartbeat = Heartbeat(
            id=self.process_id,
            writer=self.writer,
            clock=SystemClock(),  # wall time, even when the platform's clock is a test's
            role=self.role,
            names=[c.name for c in consumers],
            interval=self.settings.worker_heartbeat_seconds,
        )
        self._tasks.append(asyncio.create_task(heartbeat.run(self._stop), name="heartbeat"))

    def _start_timers(self) -> None:
        """Fire timers as they come due and run the periodic jobs (`timers.runner`), here and in
        every other process that consumes, sharing the rows."""
        self._tasks.append(asyncio.create_task(self.timers.run(self._stop), name="timers"))

    async def stop(self) -> None:
        """Stop taking work, relay what was committed, then close connections."""
        self._stop.set()
        for task in self._tasks:
            await task
        if isinstance(self.clock, ManualClock):
            await self.clock.stop()
        await self.writer.stop()
        await self.database.close()
        await self.bus.close()
        await self.engine.dispose()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def ping_database(self) -> None:
        await self.database.ping()
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    def session(self) -> AsyncSession:
        return self.sessions()
