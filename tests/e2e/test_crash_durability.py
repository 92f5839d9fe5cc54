"""A server killed with SIGKILL mid-load loses no acknowledged event, and the bus delivers each one.

Each test starts `python -m beacon serve` as a real process on a database prepared with the CLI,
sends concurrent `/track` load in which every event carries its own client id, kills the server
with SIGKILL while requests are in flight, restarts it on the same database and waits until the
outbox relay has drained what the crash left. Then every acknowledged event must be stored exactly
once, and delivered: to a consumer group of the test's own on the Redis bus, or, on the embedded
memory bus, to the in-process `profiles-last-seen` subscriber (each profile's `last_seen_at`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from tests.beacon_process import DEADLINE_S, POLL_S, BeaconProcess, remaining
from tests.conftest import NO_REDIS, REDIS_URL, scratch_database

pytestmark = pytest.mark.e2e


ADMIN_TOKEN = "e2e-admin-token"
SOURCE_ID = "e2e"
PARTITIONS = 8  # BEACON_BUS_PARTITIONS' default: the server publishes to {prefix}:events:0..7
GROUP = "e2e-test"
CLIENTS = 8
ACKNOWLEDGED_BEFORE_KILL = 300  # requests


# --- databases -----------------------------------------------------------------------------------


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of the test's backend (migrated later, with the CLI)."""
    with scratch_database(backend, tmp_path, "beacon_e2e") as url:
        yield url


async def query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    """Run a read-only statement straight against the database, next to the server."""
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as lite:
            return [tuple(row) for row in lite.execute(sql).fetchall()]
    conn = await asyncpg.connect(database_url)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


# --- the server process --------------------------------------------------------------------------


@contextlib.contextmanager
def beacon_on(database_url: str, workdir: Path, **settings: str) -> Iterator[BeaconProcess]:
    """A Beacon installation on `database_url`; every process it started is killed afterwards."""
    beacon = BeaconProcess.on(database_url, workdir, admin_token=ADMIN_TOKEN, settings=settings)
    try:
        beacon.cli("migrate")
        beacon.cli("sources", "create", "End-to-end test", "--id", SOURCE_ID)
        yield beacon
    finally:
        beacon.kill_all()


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Load:
    """What the virtual clients sent and what the server acknowledged."""

    sent: set[str] = field(default_factory=set)
    acknowledged: set[str] = field(default_factory=set)
    profiles: set[str] = field(default_factory=set)
    acknowledged_requests: int = 0
    lost_in_crash: int = 0
    rejected: list[str] = field(default_factory=list)
    enough: asyncio.Event = field(default_factory=asyncio.Event)


async def track_until_stopped(http: httpx.AsyncClient, load: Load, stop: asyncio.Event) -> None:
    """One tracker: its own session, the profile id it got back, two events per request."""
    session_id = str(uuid.uuid4())
    profile_id: str | None = None
    while not stop.is_set():
        ids = [str(uuid.uuid4()), str(uuid.uuid4())]
        payload: dict[str, Any] = {
            "source": {"id": SOURCE_ID},
            "session": {"id": session_id},
            "events": [
                {
                    "id": ids[0],
                    "type": "purchase-order",
                    "properties": {"product": "Nike shoes", "quantity": 1},
                },
                {"id": ids[1], "type": "page-view"},
            ],
        }
        if profile_id is not None:
            payload["profile"] = {"id": profile_id}
        load.sent.update(ids)
        try:
            response = await http.post("/track", json=payload)
        except httpx.TransportError:
            load.lost_in_crash += 1  # the server was killed: this request's outcome is unknown
            return
        if response.status_code != 200:
            load.rejected.append(f"{response.status_code}: {response.text[:200]}")
            load.enough.set()  # no point waiting: the test fails on `rejected`
            return
        profile_id = response.json()["profile"]["id"]
        assert isinstance(profile_id, str)
        load.acknowledged.update(ids)
        load.profiles.add(profile_id)
        load.acknowledged_requests += 1
        if load.acknowledged_requests >= ACKNOWLEDGED_BEFORE_KILL:
            load.enough.set()


async def load_then_crash_and_restart(beacon: BeaconProcess, database_url: str) -> Load:
    """Send load, SIGKILL the server mid-load, restart it and wait for the outbox to drain."""
    await beacon.astart()
    load = Load()
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=beacon.url, timeout=10.0, limits=limits) as http:
        clients = [
            asyncio.create_task(track_until_stopped(http, load, stop)) for _ in range(CLIENTS)
        ]
        try:
            await asyncio.wait_for(load.enough.wait(), DEADLINE_S)
            assert not load.rejected, load.rejected
            beacon.kill()  # SIGKILL while the clients still send
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*clients), DEADLINE_S)
    assert not load.rejected, load.rejected

    await beacon.astart()
    deadline = time.monotonic() + DEADLINE_S
    while (await query(database_url, "SELECT count(*) FROM outbox"))[0][0] > 0:
        await asyncio.sleep(min(POLL_S, remaining(deadline)))
    return load


async def assert_stored_exactly_once(database_url: str, load: Load) -> dict[str, str]:
    """Check every acknowledged event is stored once; return client id -> stored event id."""
    rows = await query(database_url, "SELECT external_id, id FROM events")
    copies = Counter(external_id for external_id, _ in rows)
    missing = load.acknowledged - copies.keys()
    assert not missing, (
        f"{len(missing)} of {len(load.acknowledged)} acknowledged events not stored"
        f" ({load.lost_in_crash} requests cut off by the kill), e.g. {sorted(missing)[:5]}"
    )
    duplicated = {external_id: n for external_id, n in copies.items() if n > 1}
    assert not duplicated, f"events stored more than once: {duplicated}"
    unknown = copies.keys() - load.sent
    assert not unknown, f"stored events nobody sent: {sorted(unknown, key=str)[:5]}"
    return {row[0]: row[1] for row in rows}


# --- the tests -----------------------------------------------------------------------------------


@dataclass
class RedisGroup:
    redis: Redis
    prefix: str

    def streams(self) -> list[str]:
        return [f"{self.prefix}:events:{p}" for p in range(PARTITIONS)]

    async def read_all(self) -> set[str]:
        """Read everything new for the test's group; return the envelope ids."""
        delivered: set[str] = set()
        deadline = time.monotonic() + DEADLINE_S
        streams: dict[Any, Any] = dict.fromkeys(self.streams(), ">")
        while True:
            remaining(deadline)
            response: Any = await self.redis.xreadgroup(GROUP, "e2e-reader", streams, count=1000)
            pairs = response.items() if isinstance(response, dict) else response or []
            count = 0
            for _, entries in pairs:
                for _, fields in entries:
                    envelope = json.loads(fields[b"m"])
                    assert envelope["id"] == envelope["body"]["id"]
                    delivered.add(envelope["id"])
                    count += 1
            if count == 0:
                return delivered


@pytest.fixture
async def redis_group() -> AsyncIterator[RedisGroup]:
    """A consumer group on every partition stream of a prefix of the test's own."""
    if not REDIS_URL:
        pytest.skip(NO_REDIS)
    group = RedisGroup(redis=Redis.from_url(REDIS_URL), prefix=f"beacon-e2e-{uuid.uuid4().hex}")
    try:
        for stream in group.streams():
            await group.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        yield group
    finally:
        keys = [key async for key in group.redis.scan_iter(match=f"{group.prefix}:*", count=1000)]
        if keys:
            await group.redis.delete(*keys)
        await group.redis.aclose()


async def test_redis_bus_delivers_every_acknowledged_event_after_sigkill(
    database_url: str, tmp_path: Path, redis_group: RedisGroup
) -> None:
    assert REDIS_URL is not None
    with beacon_on(
        database_url, tmp_path, bus_url=REDIS_URL, bus_prefix=redis_group.prefix
    ) as beacon:
        load = await load_then_crash_and_restart(beacon, database_url)
        stored = await assert_stored_exactly_once(database_url, load)
        delivered = await redis_group.read_all()

    undelivered = {stored[external_id] for external_id in load.acknowledged} - delivered
    assert not undelivered, (
        f"{len(undelivered)} of {len(load.acknowledged)} acknowledged events never reached"
        f" the bus, e.g. {sorted(undelivered)[:5]}"
    )


async def test_memory_bus_subscriber_sees_every_acknowledged_event_after_sigkill(
    database_url: str, tmp_path: Path
) -> None:
    with beacon_on(database_url, tmp_path, bus_url="memory://") as beacon:
        load = await load_then_crash_and_restart(beacon, database_url)
        await assert_stored_exactly_once(database_url, load)
        events = await query(
            database_url, "SELECT external_id, profile_id, occurred_at FROM events"
        )
        profiles = await query(database_url, "SELECT id, last_seen_at FROM profiles")

    last_seen = {row[0]: row[1] for row in profiles}
    unseen = {p for p in load.profiles if last_seen.get(p) is None}
    assert not unseen, (
        f"{len(unseen)} of {len(load.profiles)} profiles with acknowledged events have no"
        " last_seen_at: the profiles-last-seen subscriber missed their events"
    )
    # The subscriber only moves last_seen_at forward, so a profile's latest acknowledged event
    # was delivered (also across the crash) only if last_seen_at reached its time.
    behind = [
        (profile_id, external_id)
        for external_id, profile_id, occurred_at in events
        if external_id in load.acknowledged and last_seen[profile_id] < occurred_at
    ]
    assert not behind, f"acknowledged events the subscriber never saw: {behind[:5]}"


async def test_worker_process_consumes_what_servers_publish_to_redis(
    database_url: str, tmp_path: Path, redis_group: RedisGroup
) -> None:
    assert REDIS_URL is not None
    with beacon_on(
        database_url, tmp_path, bus_url=REDIS_URL, bus_prefix=redis_group.prefix
    ) as beacon:
        await beacon.astart()
        load = Load()
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=beacon.url, timeout=10.0) as http:
            clients = [asyncio.create_task(track_until_stopped(http, load, stop)) for _ in range(4)]
            await asyncio.wait_for(load.enough.wait(), DEADLINE_S)
            stop.set()
            await asyncio.gather(*clients)
        assert not load.rejected, load.rejected
        # With the Redis bus the server only publishes: nothing has consumed the events yet.
        seen = await query(
            database_url, "SELECT count(*) FROM profiles WHERE last_seen_at IS NOT NULL"
        )
        assert seen == [(0,)]

        worker = beacon.spawn("worker", log="worker.log")
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert worker.poll() is None, "beacon worker exited"
            rows = await query(
                database_url, "SELECT id FROM profiles WHERE last_seen_at IS NOT NULL"
            )
            if load.profiles <= {row[0] for row in rows}:
                break
            await asyncio.sleep(min(POLL_S, remaining(deadline)))
        worker.terminate()  # a graceful stop on SIGTERM
        assert worker.wait(DEADLINE_S) == 0
