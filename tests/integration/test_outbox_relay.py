"""The outbox relay on a real store (SQLite and PostgreSQL) and the memory bus.

Every committed envelope reaches the bus, in commit order, while neither a sweep nor the fast
path reads or publishes more than the relay's envelope budget at once (beyond a single row that
alone holds more, as a bulk import's commit does).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from beacon.bus.memory import MemoryBus
from beacon.bus.messages import EVENTS_TOPIC, Envelope, OutboxBatch
from beacon.bus.outbox import OutboxRelay, delete_outbox_rows
from beacon.core.clock import FrozenClock
from beacon.core.ids import new_id
from beacon.ingest.commands import NewEvent, TrackCommand
from beacon.runtime import create_writer
from beacon.storage.writer import Work, Writer
from tests.conftest import make_settings

T0 = datetime(2025, 3, 1, tzinfo=UTC)
LATER = T0 + timedelta(days=1)  # the relay's time: every row committed is stale by then
BUDGET = 500
# Envelopes per committed row: many rows of many, one far over the budget, and the edges.
SIZES = [120] * 12 + [1300] + [1, 499, 500, 501, 3]


@dataclass
class Recorder:
    """The subscriber: each call's envelopes, and how many calls to fail first."""

    calls: list[list[Envelope]] = field(default_factory=list)
    failures_left: int = 0

    async def __call__(self, envelopes: Sequence[Envelope]) -> None:
        if self.failures_left > 0 and self.calls:
            self.failures_left -= 1
            raise RuntimeError("subscriber down")
        self.calls.append(list(envelopes))

    @property
    def delivered(self) -> list[str]:
        return [e.id for call in self.calls for e in call]


@dataclass
class Relayed:
    writer: Writer
    clock: FrozenClock
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
    try:
        yield writer
    finally:
        await writer.database.close()


@pytest.fixture
def relayed(writer: Writer, clock: FrozenClock) -> Relayed:
    """A relay on `writer`'s database with the budget BUDGET, recording every stale-row fetch."""
    recorder = Recorder()
    bus = MemoryBus()
    bus.subscribe("recorder", EVENTS_TOPIC, recorder)
    fetched: list[list[OutboxBatch]] = []

    async def fetch_stale(older_than: datetime, max_envelopes: int) -> list[OutboxBatch]:
        rows = await writer.database.stale_outbox(older_than, max_envelopes)
        fetched.append(rows)
        return rows

    async def acknowledge(ids: list[str]) -> None:
        await writer.commit([Work(lambda tx: delete_outbox_rows(tx, ids))])

    relay = OutboxRelay(
        bus,
        fetch_stale=fetch_stale,
        acknowledge=acknowledge,
        clock=FrozenClock(LATER),
        max_envelopes=BUDGET,
    )
    return Relayed(writer, clock, relay, recorder, fetched)


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
        await relayed.writer.commit([command])
        rows.append([e.id for e in events])
        relayed.clock.advance(timedelta(seconds=1))  # rows are relayed oldest first
    return rows


async def run_once(relay: OutboxRelay) -> None:
    """Run the relay as a starting server does (sweeping everything left), then stop."""
    stop = asyncio.Event()
    stop.set()
    await relay.run(stop)


async def left_in_outbox(writer: Writer) -> list[OutboxBatch]:
    return await writer.database.stale_outbox(LATER + timedelta(days=1), 1_000_000)


async def test_a_sweep_relays_rows_of_many_events_within_its_envelope_budget(
    relayed: Relayed,
) -> None:
    rows = await commit_rows(relayed, SIZES)

    await run_once(relayed.relay)

    assert relayed.recorder.delivered == [i for row in rows for i in row]  # once each, in order
    read = [[len(row.envelopes) for row in fetch] for fetch in relayed.fetched]
    assert all(len(sizes) == 1 or sum(sizes) <= BUDGET for sizes in read), read
    assert [1300] in read  # the row over the budget is read on its own
    assert read[-1] == []  # the sweep went on until nothing was left
    assert await left_in_outbox(relayed.writer) == []


async def test_the_fast_path_publishes_handed_over_rows_within_the_envelope_budget(
    relayed: Relayed,
) -> None:
    relayed.writer.database.on_committed = relayed.relay.hand_off
    rows = await commit_rows(relayed, SIZES)

    await relayed.relay.flush()

    assert relayed.recorder.delivered == [i for row in rows for i in row]
    single_rows = [ids for ids in rows if len(ids) > BUDGET]
    for call in relayed.recorder.calls:
        assert len(call) <= BUDGET or [e.id for e in call] in single_rows, len(call)
    assert await left_in_outbox(relayed.writer) == []


async def test_rows_a_failed_publish_left_are_relayed_by_the_next_sweep(
    relayed: Relayed, plain_error_logs: None
) -> None:
    rows = await commit_rows(relayed, SIZES)
    relayed.recorder.failures_left = 1  # the second publish fails

    await run_once(relayed.relay)
    first_run = list(relayed.recorder.delivered)
    await run_once(relayed.relay)

    everything = [i for row in rows for i in row]
    assert 0 < len(first_run) < len(everything)
    assert relayed.recorder.delivered == everything  # nothing lost, nothing out of order
    assert await left_in_outbox(relayed.writer) == []
