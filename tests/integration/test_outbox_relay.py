"""The outbox relay on a real store (SQLite and PostgreSQL) and the memory bus.

Every committed envelope reaches every consumer, in commit order, while neither a sweep nor the
fast path reads or publishes more than the relay's envelope budget at once (beyond a single row
that alone holds more, as a bulk import's commit does). A row leaves the outbox only once every
consumer has handled its envelopes; a slow consumer holds up neither the relay nor the other
consumers, and when it falls far behind, committed rows wait in the outbox, not in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from beacon.bus.base import Receipt
from beacon.bus.memory import MemoryBus
from beacon.bus.messages import EVENTS_TOPIC, Envelope, OutboxBatch
from beacon.bus.outbox import MAX_PENDING, OutboxRelay, delete_outbox_rows
from beacon.core.clock import FrozenClock
from beacon.core.ids import new_id
from beacon.ingest.commands import NewEvent, TrackCommand
from beacon.runtime import create_writer
from beacon.storage.writer import Writer
from tests.conftest import make_settings
from tests.integration.test_bus_contract import eventually

T0 = datetime(2025, 3, 1, tzinfo=UTC)
LATER = T0 + timedelta(days=1)  # the relay's time: every row committed is stale by then
BUDGET = 500
# Envelopes per committed row: many rows of many, one far over the budget, and the edges.
SIZES = [120] * 12 + [1300] + [1, 499, 500, 501, 3]


@dataclass
class Recorder:
    """A subscriber: each call's envelopes; it can fail a number of calls, or hold until let go."""

    calls: list[list[Envelope]] = field(default_factory=list)
    failures_left: int = 0
    going: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.going.set()

    async def __call__(self, envelopes: Sequence[Envelope]) -> None:
        await self.going.wait()
        if self.failures_left > 0 and self.calls:
            self.failures_left -= 1
            raise RuntimeError("subscriber down")
        self.calls.append(list(envelopes))

    @property
    def delivered(self) -> list[str]:
        return [e.id for call in self.calls for e in call]


class FlakyBus(MemoryBus):
    """A memory bus whose `publish` fails a number of times, as Redis does while it is down."""

    def __init__(self, **options: int | float) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.failures_left = 0

    async def publish(self, envelopes: Sequence[Envelope]) -> Receipt:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise ConnectionError("bus down")
        return await super().publish(envelopes)


@dataclass
class Relayed:
    writer: Writer
    clock: FrozenClock
    bus: FlakyBus
    relay: OutboxRelay
    recorder: Recorder
    fetched: list[list[OutboxBatch]]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
async def writer(database_url: str, clock: FrozenClock) -> AsyncIterator[Writer]:
    writer, _ = create_writer(make_settings(database_url), clock)
    await writer.database.start()
    writer.start()
    try:
        yield writer
    finally:
        await writer.stop()
        await writer.database.close()


def relay_on(
    writer: Writer, bus: FlakyBus, *, max_pending: int = MAX_PENDING
) -> tuple[OutboxRelay, list[list[OutboxBatch]]]:
    """A relay on `writer`'s database with the budget BUDGET, recording every stale-row fetch."""
    fetched: list[list[OutboxBatch]] = []

    async def fetch_stale(
        older_than: datetime, max_envelopes: int, after: OutboxBatch | None
    ) -> list[OutboxBatch]:
        rows = await writer.database.stale_outbox(older_than, max_envelopes, after)
        fetched.append(rows)
        return rows

    async def acknowledge(ids: list[str]) -> None:
        await writer.run(lambda tx: delete_outbox_rows(tx, ids))

    relay = OutboxRelay(
        bus,
        fetch_stale=fetch_stale,
        acknowledge=acknowledge,
        clock=FrozenClock(LATER),
        max_envelopes=BUDGET,
        sweep_interval=0.05,
        max_pending=max_pending,
    )
    return relay, fetched


@pytest.fixture
def relayed(writer: Writer, clock: FrozenClock) -> Relayed:
    recorder = Recorder()
    bus = FlakyBus(retry_delay=0.01, batch_size=BUDGET)
    bus.subscribe("recorder", EVENTS_TOPIC, recorder)
    relay, fetched = relay_on(writer, bus)
    return Relayed(writer, clock, bus, relay, recorder, fetched)


async def commit_rows(relayed: Relayed, sizes: list[int]) -> list[list[str]]:
    """Commit one request per size, its events on one of three visits; return each row's ids."""
    rows = []
    for n, size in enumerate(sizes):
        events = [
            NewEvent(id=new_id(), type="page-view", occurred_at=T0, properties={}, context={})
            for _ in range(size)
        ]
        command = TrackCommand(
            source_id="web",
            received_at=relayed.clock.now(),
            events=events,
            resolve_profile=False,
            session_id=f"visit-{n % 3}",
        )
        await relayed.writer.submit(command)
        rows.append([e.id for e in events])
        relayed.clock.advance(timedelta(seconds=1))  # rows are relayed oldest first
    return rows


@contextlib.asynccontextmanager
async def running(relayed: Relayed) -> AsyncIterator[None]:
    """Run the memory bus's consumers and the relay, as a server does, and stop them after."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(relayed.bus.consume(stop)),
        asyncio.create_task(relayed.relay.run(stop)),
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=15)


async def left_in_outbox(writer: Writer) -> list[OutboxBatch]:
    return await writer.database.stale_outbox(LATER + timedelta(days=1), 1_000_000)


async def outbox_is_empty(writer: Writer) -> bool:
    return await left_in_outbox(writer) == []


async def test_a_start_up_sweep_relays_rows_of_many_events_within_its_envelope_budget(
    relayed: Relayed,
) -> None:
    rows = await commit_rows(relayed, SIZES)

    async with running(relayed):
        await eventually(lambda: outbox_is_empty(relayed.writer))

    assert relayed.recorder.delivered == [i for row in rows for i in row]  # once each, in order
    read = [[len(row.envelopes) for row in fetch] for fetch in relayed.fetched]
    assert all(len(sizes) == 1 or sum(sizes) <= BUDGET for sizes in read), read
    assert [1300] in read  # the row over the budget is read on its own
    assert read[-1] == []  # the sweep went on until nothing was left


async def test_the_fast_path_publishes_handed_over_rows_within_the_envelope_budget(
    relayed: Relayed,
) -> None:
    async with running(relayed):
        await eventually(lambda: relayed.relay.caught_up)
        relayed.writer.database.on_committed = relayed.relay.hand_off
        rows = await commit_rows(relayed, SIZES)
        await eventually(lambda: outbox_is_empty(relayed.writer))

    assert relayed.recorder.delivered == [i for row in rows for i in row]
    assert all(fetch == [] for fetch in relayed.fetched)  # handed over, never read back
    single_rows = [ids for ids in rows if len(ids) > BUDGET]
    for call in relayed.recorder.calls:
        assert len(call) <= BUDGET or [e.id for e in call] in single_rows, len(call)


async def test_rows_stay_in_the_outbox_until_a_failing_consumer_has_handled_them(
    writer: Writer, clock: FrozenClock, plain_error_logs: None
) -> None:
    recorder = Recorder(failures_left=3)  # after its first call, three fail
    recorder.going.clear()
    bus = FlakyBus(retry_delay=0.01, batch_size=10)
    bus.subscribe("recorder", EVENTS_TOPIC, recorder)
    relay, fetched = relay_on(writer, bus)
    relayed = Relayed(writer, clock, bus, relay, recorder, fetched)
    writer.database.on_committed = relay.hand_off

    async def queued() -> bool:
        lag = await bus.lag("recorder", EVENTS_TOPIC)
        return lag is not None and lag.total == 30

    async with running(relayed):
        await eventually(lambda: relay.caught_up)
        rows = await commit_rows(relayed, [10, 10, 10])
        await eventually(queued)
        assert [len(r.envelopes) for r in await left_in_outbox(writer)] == [10, 10, 10]
        recorder.going.set()
        await eventually(lambda: outbox_is_empty(writer))

    assert recorder.delivered == [i for row in rows for i in row]  # in order, once each
    assert recorder.failures_left == 0


async def test_rows_a_failed_publish_left_are_published_later_in_commit_order(
    relayed: Relayed, plain_error_logs: None
) -> None:
    relayed.writer.database.on_committed = relayed.relay.hand_off

    async with running(relayed):
        await eventually(lambda: relayed.relay.caught_up)
        relayed.bus.failures_left = 2  # the bus is down for two publishes
        rows = await commit_rows(relayed, [5] * 6)
        await eventually(lambda: outbox_is_empty(relayed.writer))

    assert relayed.recorder.delivered == [i for row in rows for i in row]


async def test_a_slow_consumer_holds_up_neither_the_relay_nor_the_others_and_memory_is_bounded(
    writer: Writer, clock: FrozenClock
) -> None:
    slow, fast = Recorder(), Recorder()
    slow.going.clear()
    capacity, max_pending = 50, 40
    bus = FlakyBus(capacity=capacity, batch_size=20, retry_delay=0.01)
    bus.subscribe("slow", EVENTS_TOPIC, slow)
    bus.subscribe("fast", EVENTS_TOPIC, fast)
    relay, fetched = relay_on(writer, bus, max_pending=max_pending)
    relayed = Relayed(writer, clock, bus, relay, fast, fetched)
    writer.database.on_committed = relay.hand_off

    async with running(relayed):
        await eventually(lambda: relay.caught_up)
        rows = await commit_rows(relayed, [10] * 30)  # commits go on, however far behind
        everything = [i for row in rows for i in row]
        # The fast consumer has what the bus could take; the slow one holds its first batch.
        await eventually(lambda: len(fast.delivered) >= capacity)
        lag = await bus.lag("slow", EVENTS_TOPIC)
        assert lag is not None and capacity <= lag.total <= capacity + max_pending
        assert not relay.caught_up  # hand-offs were dropped: the rows wait in the outbox
        assert len(await left_in_outbox(writer)) == 30  # every row awaits the slow consumer
        slow.going.set()
        await eventually(lambda: outbox_is_empty(writer))
        await eventually(lambda: relay.caught_up)

    assert fast.delivered == everything
    assert slow.delivered == everything
