"""The bus contract, run on every backend: the memory bus and the Redis Streams bus.

What a consumer can count on, whichever bus carries its messages: every message at least once,
in order per key; a handler that raises gets the message again before anything newer on its
key; under the workers runner, a message that keeps failing is retried with backoff and then
dead-lettered while its partition moves on; a slow consumer does not delay another; and a
message handled again after a crash has its effect once, thanks to the idempotency helper.

Where the backends differ the test says so: the memory bus keeps nothing (the outbox is the
durable copy, so its crash test runs the outbox relay too; a subscriber registered later sees
only what is published later); the Redis bus keeps every entry until each consumer group has
acknowledged it, across consumer restarts, and consumers share a group across processes.

Redis tests need a real Redis at `BEACON_TEST_REDIS_URL`; they skip when it is not set. Effects
are rows of a SQLite database written through Beacon's write path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from beacon.bus.base import Bus
from beacon.bus.factory import create_bus
from beacon.bus.memory import MemoryBus
from beacon.bus.messages import Envelope
from beacon.bus.outbox import OutboxRelay, delete_outbox_rows
from beacon.bus.redis_streams import RedisStreamsBus, partition_of
from beacon.core.clock import SystemClock
from beacon.migrations.runner import upgrade_database
from beacon.runtime import create_writer
from beacon.settings import Settings
from beacon.storage.transaction import Tx
from beacon.storage.writer import Writer
from beacon.workers.idempotency import first_time
from beacon.workers.registry import Consumer
from beacon.workers.runner import Backoff, ConsumerRunner
from tests.conftest import make_settings

# Handlers fail on purpose here: a rich traceback takes long enough to render that it blocks
# the event loop past the short leases these buses use, and they would lapse mid-test.
pytestmark = pytest.mark.usefixtures("plain_error_logs")

TOPIC = "events"
PARTITIONS = 4
REDIS_URL_VARIABLE = "BEACON_TEST_REDIS_URL"


class HandlerFailed(Exception):
    pass


@dataclass
class Recorder:
    """A subscriber that records what it handled, and can fail chosen messages a number of times."""

    handled: list[Envelope] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    failures_left: dict[str, int] = field(default_factory=dict)

    async def __call__(self, envelopes: Sequence[Envelope]) -> None:
        self.attempts.update(e.id for e in envelopes)
        for envelope in envelopes:
            if self.failures_left.get(envelope.id, 0) > 0:
                self.failures_left[envelope.id] -= 1
                raise HandlerFailed(envelope.id)
        self.handled.extend(envelopes)


@dataclass
class Backend:
    """Makes buses of one kind that share a namespace, and cleans up after the test."""

    kind: str
    redis_url: str | None = None
    prefix: str = field(default_factory=lambda: f"beacon-test-{uuid.uuid4().hex}")
    buses: list[Bus] = field(default_factory=list)

    def new_bus(self, *, reclaim_idle_ms: int = 30000, consumer_name: str | None = None) -> Bus:
        bus: Bus
        if self.redis_url is None:
            bus = MemoryBus(retry_delay=0.05)
        else:
            bus = RedisStreamsBus(
                self.redis_url,
                partitions=PARTITIONS,
                prefix=self.prefix,
                consumer_name=consumer_name or f"consumer-{len(self.buses)}",
                block_ms=50,
                reclaim_idle_ms=reclaim_idle_ms,
                lease_ms=600,
            )
        self.buses.append(bus)
        return bus

    def redis(self) -> Redis:
        assert self.redis_url is not None
        return Redis.from_url(self.redis_url)

    async def pending_count(self, group: str) -> int:
        """Return how many entries `group` has read from the test topic but not acknowledged."""
        client = self.redis()
        try:
            total = 0
            for partition in range(PARTITIONS):
                summary = await client.xpending(f"{self.prefix}:{TOPIC}:{partition}", group)
                total += int(summary["pending"])
            return total
        finally:
            await client.aclose()

    async def lease_holders(self, group: str) -> set[str]:
        """Return the consumers holding a partition lease of `group`."""
        client = self.redis()
        try:
            keys = [k async for k in client.scan_iter(match=f"{self.prefix}:lease:{group}:*")]
            holders = await client.mget(keys) if keys else []
            return {h.decode() if isinstance(h, bytes) else h for h in holders if h is not None}
        finally:
            await client.aclose()

    async def delete_keys(self) -> None:
        client = self.redis()
        try:
            keys = [key async for key in client.scan_iter(match=f"{self.prefix}:*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        backend = Backend(kind="memory")
    else:
        url = os.environ.get(REDIS_URL_VARIABLE)
        if not url:
            pytest.skip(f"{REDIS_URL_VARIABLE} is not set: Redis bus tests need a real Redis")
        backend = Backend(kind="redis", redis_url=url)
    try:
        yield backend
    finally:
        for bus in backend.buses:
            await bus.close()
        if backend.redis_url is not None:
            await backend.delete_keys()


@contextlib.asynccontextmanager
async def consuming(
    bus: Bus, stop: asyncio.Event | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """Run `bus.consume` in the background and stop it on exit (or when `stop` is set)."""
    stop = stop or asyncio.Event()
    task = asyncio.create_task(bus.consume(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0
) -> None:
    """Wait until `condition()` holds, failing after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


def envelope(key: str, seq: int = 0, *, topic: str = TOPIC, **body: Any) -> Envelope:
    return Envelope(id=str(uuid.uuid4()), topic=topic, key=key, body={"seq": seq, **body})


def by_id(envelopes: Sequence[Envelope]) -> dict[str, Envelope]:
    return {e.id: e for e in envelopes}


async def test_every_published_envelope_reaches_the_subscriber_as_sent(backend: Backend) -> None:
    bus = backend.new_bus()
    recorder = Recorder()
    bus.subscribe("profiles", TOPIC, recorder)
    sent = [
        envelope("p-1", 0, text="héllo ✓", nested={"list": [1, 2.5, None, True]}),
        envelope("p-2", 0, big=2**53, empty={}),
        envelope("p-3", 0, quote='"\\\n'),
    ]
    elsewhere = envelope("p-1", 1, topic="other")

    async with consuming(bus):
        await bus.publish([*sent, elsewhere])
        await eventually(lambda: len(recorder.handled) >= len(sent))

    assert by_id(recorder.handled) == by_id(sent)
    assert len(recorder.handled) == len(sent)


async def test_order_is_kept_per_key_across_interleaved_keys(backend: Backend) -> None:
    bus = backend.new_bus()
    recorder = Recorder()
    bus.subscribe("profiles", TOPIC, recorder)
    keys = [f"profile-{n}" for n in range(20)]
    per_key = 30
    sent = [envelope(key, seq) for seq in range(per_key) for key in keys]

    async with consuming(bus):
        for start in range(0, len(sent), 50):
            await bus.publish(sent[start : start + 50])
        await eventually(lambda: len(recorder.handled) >= len(sent))

    seqs: defaultdict[str, list[int]] = defaultdict(list)
    for handled in recorder.handled:
        seqs[handled.key].append(handled.body["seq"])
    assert seqs == {key: list(range(per_key)) for key in keys}


async def test_each_subscriber_name_receives_every_message(backend: Backend) -> None:
    bus = backend.new_bus()
    first, second = Recorder(), Recorder()
    bus.subscribe("journeys", TOPIC, first)
    bus.subscribe("segments", TOPIC, second)
    sent = [envelope(f"p-{n % 5}", n) for n in range(25)]

    async with consuming(bus):
        await bus.publish(sent)
        await eventually(lambda: len(first.handled) >= 25 and len(second.handled) >= 25)

    assert by_id(first.handled) == by_id(sent)
    assert by_id(second.handled) == by_id(sent)


async def test_a_failed_message_is_delivered_again_before_newer_ones_on_its_key(
    backend: Backend,
) -> None:
    bus = backend.new_bus(reclaim_idle_ms=200)
    recorder = Recorder()
    bus.subscribe("profiles", TOPIC, recorder)
    failing, later = envelope("p-1", 0), envelope("p-1", 1)
    recorder.failures_left[failing.id] = 1

    async with consuming(bus):
        # Memory: the consumer's queue keeps it first and delivers it again after retry_delay.
        # Redis: the entry stays pending and is reclaimed once idle for reclaim_idle_ms.
        await bus.publish([failing])
        await eventually(lambda: recorder.attempts[failing.id] >= 1)
        await bus.publish([later])
        await eventually(lambda: len(recorder.handled) >= 2)

    assert recorder.handled == [failing, later]
    assert recorder.attempts[failing.id] == 2


async def test_a_message_published_while_no_consumer_runs(backend: Backend) -> None:
    publisher = backend.new_bus()
    before_any_consumer, while_running, between_consumers = (
        envelope("p-1", 0),
        envelope("p-1", 1),
        envelope("p-1", 2),
    )

    if backend.kind == "memory":
        # Not durable by design: with no subscriber the message is simply not delivered (the
        # outbox is the durable copy); a subscriber registered later sees later messages only.
        await publisher.publish([before_any_consumer])
        recorder = Recorder()
        publisher.subscribe("profiles", TOPIC, recorder)
        async with consuming(publisher):
            await publisher.publish([while_running])
            await eventually(lambda: len(recorder.handled) >= 1)
        assert recorder.handled == [while_running]
        return

    # Durable: entries wait in the stream for the group, from before it existed and across a
    # consumer restart, and what a stopped consumer acknowledged is not delivered again.
    await publisher.publish([before_any_consumer])
    first_consumer, first = backend.new_bus(), Recorder()
    first_consumer.subscribe("profiles", TOPIC, first)
    async with consuming(first_consumer):
        await eventually(lambda: len(first.handled) >= 1)
        await publisher.publish([while_running])
        await eventually(lambda: len(first.handled) >= 2)
    await first_consumer.close()

    await publisher.publish([between_consumers])
    second_consumer, second = backend.new_bus(), Recorder()
    second_consumer.subscribe("profiles", TOPIC, second)
    async with consuming(second_consumer):
        await eventually(lambda: len(second.handled) >= 1)
        await asyncio.sleep(0.2)  # room for a wrongful redelivery of acknowledged entries

    assert first.handled == [before_any_consumer, while_running]
    assert second.handled == [between_consumers]


async def test_a_dead_consumers_unacknowledged_messages_go_to_another_consumer(
    backend: Backend,
) -> None:
    if backend.kind == "memory":
        pytest.skip("the memory bus dies with its consumers: the crash test covers its redelivery")
    sent = [envelope(f"p-{n % 3}", n) for n in range(9)]
    seen_by_dead: list[Envelope] = []

    async def hang(envelopes: Sequence[Envelope]) -> None:
        seen_by_dead.extend(envelopes)
        await asyncio.Event().wait()

    dying = backend.new_bus()
    dying.subscribe("profiles", TOPIC, hang)
    dying_stop = asyncio.Event()
    dying_task = asyncio.create_task(dying.consume(dying_stop))
    await dying.publish(sent)
    await eventually(lambda: len(seen_by_dead) >= 1)
    dying_task.cancel()  # the process dies mid-batch: nothing it read is acknowledged
    with contextlib.suppress(asyncio.CancelledError):
        await dying_task

    # Its partitions are taken over when its leases expire, pending entries first.
    survivor, recorder = backend.new_bus(), Recorder()
    survivor.subscribe("profiles", TOPIC, recorder)
    async with consuming(survivor):
        await eventually(lambda: len(recorder.handled) >= len(sent))

    assert by_id(recorder.handled) == by_id(sent)
    assert await backend.pending_count("profiles") == 0


async def test_consumers_sharing_a_group_split_the_partitions_and_keep_order_per_key(
    backend: Backend,
) -> None:
    if backend.kind == "memory":
        pytest.skip("the memory bus lives in one process: no consumers share a group")
    handled: list[tuple[str, Envelope]] = []

    def handler(consumer: str, delay: float) -> Callable[[Sequence[Envelope]], Awaitable[None]]:
        async def handle(envelopes: Sequence[Envelope]) -> None:
            await asyncio.sleep(delay)
            handled.extend((consumer, e) for e in envelopes)

        return handle

    slow, fast = backend.new_bus(consumer_name="slow"), backend.new_bus(consumer_name="fast")
    slow.subscribe("profiles", TOPIC, handler("slow", 0.03))
    fast.subscribe("profiles", TOPIC, handler("fast", 0))
    keys = [f"profile-{n}" for n in range(20)]
    sent = [envelope(key, seq) for seq in range(20) for key in keys]
    after_fast_stopped = [envelope(key, 20) for key in keys]

    async def both_hold_leases() -> bool:
        return await backend.lease_holders("profiles") == {"slow", "fast"}

    async with consuming(slow):
        async with consuming(fast):
            await eventually(both_hold_leases)
            for start in range(0, len(sent), 20):
                await fast.publish(sent[start : start + 20])
                await asyncio.sleep(0.01)
            await eventually(lambda: len(handled) >= len(sent))
        # Once fast has stopped, slow takes over its partitions.
        await slow.publish(after_fast_stopped)
        await eventually(lambda: len(handled) >= len(sent) + len(keys))

    seqs: defaultdict[str, list[int]] = defaultdict(list)
    for _, handled_envelope in handled:
        seqs[handled_envelope.key].append(handled_envelope.body["seq"])
    assert seqs == {key: list(range(21)) for key in keys}
    assert {consumer for consumer, _ in handled[: len(sent)]} == {"slow", "fast"}
    assert {consumer for consumer, _ in handled[len(sent) :]} == {"slow"}


async def test_undecodable_entries_are_skipped_and_acknowledged(backend: Backend) -> None:
    if backend.kind == "memory":
        pytest.skip("the memory bus moves Envelope objects and never decodes bytes")
    bus = backend.new_bus()
    assert isinstance(bus, RedisStreamsBus)
    recorder = Recorder()
    bus.subscribe("profiles", TOPIC, recorder)
    good = envelope("p-1", 0)
    stream = bus.stream_for(good)
    client = backend.redis()
    try:
        for fields in (
            {b"m": b"not json"},
            {b"m": b'{"id": "x"}'},
            {b"m": b'{"id": "x", "topic": "events", "key": "p-1", "body": [1]}'},
            {b"other": b"field"},
        ):
            await client.xadd(stream, fields)  # type: ignore[arg-type]
    finally:
        await client.aclose()

    async with consuming(bus):
        await bus.publish([good])
        await eventually(lambda: len(recorder.handled) >= 1)

    assert recorder.handled == [good]
    assert await backend.pending_count("profiles") == 0


async def test_redis_streams_keep_only_what_some_group_has_not_acknowledged(
    backend: Backend,
) -> None:
    if backend.kind == "memory":
        pytest.skip("the memory bus keeps no stream: a queue per consumer, emptied as it handles")
    bus = backend.new_bus(reclaim_idle_ms=200)  # claims and trims every 0.2 s
    journeys, segments = Recorder(), Recorder()
    bus.subscribe("journeys", TOPIC, journeys)
    bus.subscribe("segments", TOPIC, segments)
    stuck = envelope("p-stuck")
    segments.failures_left[stuck.id] = 10**6
    others = [envelope(f"p-{n % 10}", n) for n in range(40)]
    stuck_partition = partition_of(stuck.key, PARTITIONS)
    behind_stuck = [e for e in others if partition_of(e.key, PARTITIONS) == stuck_partition]
    client = backend.redis()

    async def lengths() -> list[int]:
        return [await client.xlen(f"{backend.prefix}:{TOPIC}:{p}") for p in range(PARTITIONS)]

    async def trimmed() -> bool:
        found = await lengths()
        others_left = sum(n for p, n in enumerate(found) if p != stuck_partition)
        return others_left <= PARTITIONS - 1 and found[stuck_partition] == 1 + len(behind_stuck)

    try:
        async with consuming(bus):
            await bus.publish([stuck, *others])
            await eventually(lambda: len(journeys.handled) == 41)
            await eventually(lambda: len(segments.handled) == 40 - len(behind_stuck))
            await eventually(trimmed)
            kept = await lengths()
    finally:
        await client.aclose()

    assert kept[stuck_partition] == 1 + len(behind_stuck)  # nothing segments has yet to handle
    assert sum(kept) < 41


async def test_consume_returns_soon_after_stop_is_set(backend: Backend) -> None:
    bus = backend.new_bus()
    bus.subscribe("profiles", TOPIC, Recorder())
    stop = asyncio.Event()
    task = asyncio.create_task(bus.consume(stop))
    await asyncio.sleep(0.1)

    stop.set()

    await asyncio.wait_for(task, timeout=5)
    await bus.ping()


async def test_create_bus_picks_the_backend_from_the_url_scheme() -> None:
    assert isinstance(create_bus("memory://", partitions=4), MemoryBus)
    for url in ("redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6380/0"):
        bus = create_bus(url, partitions=4)
        assert isinstance(bus, RedisStreamsBus)
        assert bus.partitions == 4
        await bus.close()
    with pytest.raises(ValueError, match="unsupported bus URL scheme 'kafka'"):
        create_bus("kafka://broker:9092", partitions=4)


def test_a_keys_partition_never_changes() -> None:
    # Moving keys between partitions would break their order across an upgrade.
    assert [partition_of(key, 8) for key in ("profile-1", "profile-2", "anon-7f3c")] == [4, 6, 3]
    assert partition_of("profile-2", 256) == 254


async def test_a_slow_consumer_does_not_delay_another(backend: Backend) -> None:
    bus = backend.new_bus()
    release = asyncio.Event()
    slow, fast = Recorder(), Recorder()

    async def hold_then_record(envelopes: Sequence[Envelope]) -> None:
        await release.wait()
        await slow(envelopes)

    bus.subscribe("slow", TOPIC, hold_then_record)
    bus.subscribe("fast", TOPIC, fast)
    sent = [envelope(f"p-{n % 4}", n) for n in range(40)]

    async with consuming(bus):
        receipts = [await bus.publish(sent[start : start + 10]) for start in range(0, 40, 10)]
        await eventually(lambda: len(fast.handled) >= len(sent))
        assert slow.handled == []
        if backend.kind == "memory":
            # Nothing may leave the outbox while the slow consumer has yet to handle it.
            assert not any(receipt.done() for receipt in receipts)
        else:
            assert all(receipt.done() and receipt.result() for receipt in receipts)
        release.set()
        await eventually(lambda: len(slow.handled) >= len(sent))
        assert [await receipt for receipt in receipts] == [True] * 4

    assert by_id(fast.handled) == by_id(sent)
    seqs: defaultdict[str, list[int]] = defaultdict(list)
    for handled in slow.handled:
        seqs[handled.key].append(handled.body["seq"])
    assert seqs == {f"p-{k}": list(range(k, 40, 4)) for k in range(4)}


# --- consumers under the workers runner ----------------------------------------------------------

EFFECTS_TABLE = (
    "CREATE TABLE test_effects (consumer TEXT NOT NULL, message_id TEXT NOT NULL,"
    " key TEXT NOT NULL, seq INTEGER NOT NULL)"
)
BACKOFF = Backoff(base=0.01, cap=0.05)


@pytest.fixture
def effects_database(tmp_path: Path) -> str:
    """A migrated SQLite database with a table for the test consumers' effects (no unique key:
    only the idempotency helper stands between a redelivery and a second row)."""
    path = tmp_path / "beacon.db"
    url = f"sqlite:///{path}"
    upgrade_database(Settings(database_url=url))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(EFFECTS_TABLE)
        conn.commit()
    return url


@pytest.fixture
async def writer(effects_database: str) -> AsyncIterator[Writer]:
    writer, _ = create_writer(make_settings(effects_database), SystemClock())
    await writer.database.start()
    writer.start()
    try:
        yield writer
    finally:
        await writer.stop()
        await writer.database.close()


@dataclass
class EffectConsumer:
    """A consumer whose effect is a row per message, written with the idempotency helper.

    It fails each message named in `failures` that many more times (before writing anything);
    with `hold` set it waits on it after committing a batch: the window in which a crash leaves
    messages handled but not acknowledged.
    """

    writer: Writer
    name: str = "effects"
    failures: dict[str, int] = field(default_factory=dict)
    seen: Counter[str] = field(default_factory=Counter)
    hold: asyncio.Event | None = None
    holding: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, envelopes: Sequence[Envelope]) -> None:
        self.seen.update(e.id for e in envelopes)
        for e in envelopes:
            if self.failures.get(e.id, 0) > 0:
                self.failures[e.id] -= 1
                raise HandlerFailed(e.id)

        async def work(tx: Tx) -> None:
            for e in envelopes:
                if await first_time(tx, consumer=self.name, key=e.id):
                    await tx.sql.execute(
                        "INSERT INTO test_effects (consumer, message_id, key, seq)"
                        " VALUES (?, ?, ?, ?)",
                        self.name,
                        e.id,
                        e.key,
                        e.body["seq"],
                    )

        await self.writer.run(work)
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()

    def runner(
        self, stop: asyncio.Event, *, max_attempts: int = 3, backoff: Backoff = BACKOFF
    ) -> ConsumerRunner:
        consumer = Consumer(self.name, TOPIC, self, max_attempts=max_attempts)
        return ConsumerRunner(consumer, writer=self.writer, backoff=backoff, stop=stop)


async def effects(writer: Writer, consumer: str = "effects") -> list[tuple[str, int]]:
    """(message id, seq) of each effect the consumer had, in the order they were written."""
    rows = await writer.database.read(
        "SELECT message_id, seq FROM test_effects WHERE consumer = ? ORDER BY rowid", consumer
    )
    return [(str(row[0]), int(row[1])) for row in rows]


async def dead_letters(writer: Writer) -> list[tuple[str, str, int, str, str]]:
    """(consumer, message id, attempts, error, envelope) of each consumer dead letter."""
    rows = await writer.database.read(
        "SELECT consumer, message_id, attempts, error, envelope FROM consumer_dead_letters"
        " ORDER BY failed_at"
    )
    return [(str(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4])) for r in rows]


def has_effects(writer: Writer, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(await effects(writer)) >= count

    return check


async def test_a_message_failing_a_few_times_is_retried_alone_and_handled_once(
    backend: Backend, writer: Writer
) -> None:
    bus = backend.new_bus(reclaim_idle_ms=200)
    stop = asyncio.Event()
    consumer = EffectConsumer(writer)
    bus.subscribe(consumer.name, TOPIC, consumer.runner(stop, max_attempts=5))
    sent = [envelope("p-1", seq) for seq in range(6)]
    consumer.failures[sent[2].id] = 3

    async with consuming(bus, stop):
        await bus.publish(sent)
        await eventually(has_effects(writer, len(sent)))

    assert await effects(writer) == [(e.id, e.body["seq"]) for e in sent]  # once each, in order
    assert consumer.seen[sent[2].id] == 4  # three failures, then handled
    assert await dead_letters(writer) == []


async def test_a_message_failing_every_attempt_is_dead_lettered_and_its_partition_moves_on(
    backend: Backend, writer: Writer
) -> None:
    bus = backend.new_bus(reclaim_idle_ms=200)
    stop = asyncio.Event()
    consumer = EffectConsumer(writer)
    bus.subscribe(consumer.name, TOPIC, consumer.runner(stop, max_attempts=3))
    before, poison, after, later = (envelope("p-1", seq) for seq in range(4))
    consumer.failures[poison.id] = 10**6

    async with consuming(bus, stop):
        await bus.publish([before, poison, after])
        await eventually(has_effects(writer, 2))
        await bus.publish([later])
        await eventually(has_effects(writer, 3))

    assert await effects(writer) == [(before.id, 0), (after.id, 2), (later.id, 3)]
    [(name, message_id, attempts, error, kept)] = await dead_letters(writer)
    assert (name, message_id, attempts) == ("effects", poison.id, 3)
    assert error == f"HandlerFailed: {poison.id}"
    assert Envelope.decode(kept) == poison
    assert consumer.seen[poison.id] == 4  # in the batch, then three times alone
    if backend.kind == "redis":
        assert await backend.pending_count("effects") == 0  # acknowledged: nothing is stuck


async def test_a_stop_during_retries_gives_the_message_back_without_dead_lettering_it(
    backend: Backend, writer: Writer
) -> None:
    bus = backend.new_bus(reclaim_idle_ms=200)
    stop = asyncio.Event()
    consumer = EffectConsumer(writer)
    slow_retries = Backoff(base=60.0, cap=60.0)
    bus.subscribe(consumer.name, TOPIC, consumer.runner(stop, backoff=slow_retries))
    failing = envelope("p-1", 0)
    consumer.failures[failing.id] = 1

    async with consuming(bus, stop):
        receipt = await bus.publish([failing])
        await eventually(lambda: consumer.seen[failing.id] >= 1)
        stop.set()  # `consuming` fails the test unless consume returns within 10 s

    assert await dead_letters(writer) == []
    assert await effects(writer) == []
    if backend.kind == "memory":
        assert await receipt is False  # its outbox row stays, for the next start
        return
    assert await backend.pending_count("effects") == 1
    successor, successor_stop = backend.new_bus(reclaim_idle_ms=200), asyncio.Event()
    successor.subscribe(consumer.name, TOPIC, consumer.runner(successor_stop))
    async with consuming(successor, successor_stop):
        await eventually(has_effects(writer, 1))
    assert await effects(writer) == [(failing.id, 0)]


@dataclass
class Process:
    """One Beacon process of the test: a bus with the effects consumer, and the outbox relay."""

    bus: Bus
    relay: OutboxRelay
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]]

    async def crash(self) -> None:
        """Die at once: nothing is finished, acknowledged or released."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.relay.settle(timeout=0)  # what the dead process awaited dies with it

    async def shut_down(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), timeout=10)


def start_process(backend: Backend, writer: Writer, consumer: EffectConsumer) -> Process:
    bus = backend.new_bus()
    stop = asyncio.Event()
    bus.subscribe(consumer.name, TOPIC, consumer.runner(stop))

    async def acknowledge(ids: list[str]) -> None:
        await writer.run(lambda tx: delete_outbox_rows(tx, ids))

    relay = OutboxRelay(
        bus,
        fetch_stale=writer.database.stale_outbox,
        acknowledge=acknowledge,
        clock=SystemClock(),
        sweep_interval=0.05,
        stale_after=0.0,
    )
    writer.database.on_committed = relay.hand_off
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(bus.consume(stop))]
    return Process(bus, relay, stop, tasks)


async def test_messages_handled_again_after_a_crash_have_their_effect_once(
    backend: Backend, writer: Writer
) -> None:
    sent = [envelope(f"p-{n % 3}", n) for n in range(12)]

    async def commit(tx: Tx) -> None:
        tx.enqueue(sent)

    # The first process commits a batch's effects, then dies before the bus learns of it.
    crashing = EffectConsumer(writer, hold=asyncio.Event())
    first = start_process(backend, writer, crashing)
    await writer.run(commit)
    await asyncio.wait_for(crashing.holding.wait(), timeout=10)
    await first.crash()

    # The next one gets those messages again (memory: the relay publishes the outbox row again;
    # Redis: the entries left pending are claimed), and the rest.
    restarted = EffectConsumer(writer)
    second = start_process(backend, writer, restarted)
    try:
        await eventually(has_effects(writer, len(sent)))
        # The crashed batch comes again (on Redis once its entries were idle long enough to be
        # claimed, which a busy machine may delay past the effects being complete).
        await eventually(lambda: bool(set(crashing.seen) & set(restarted.seen)))
        await asyncio.sleep(0.2)  # room for a wrongful second effect
    finally:
        await second.shut_down()

    assert Counter(message_id for message_id, _ in await effects(writer)) == {e.id: 1 for e in sent}
    assert await writer.database.stale_outbox(SystemClock().now(), 1000) == []
