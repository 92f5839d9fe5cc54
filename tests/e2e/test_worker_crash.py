"""A `beacon worker` killed with SIGKILL while timers are due and messages are pending, then
started again: nothing is lost and nothing is handled twice (PostgreSQL and Redis).

A plugin the test writes into its tmp dir gives the worker a consumer and a timer kind, both
slow enough for the kill to land mid-work. Each records its effect in a table without a key,
so an effect done twice shows twice: the consumer's through the idempotency helper (one row per
message), the timer's in the transaction that deletes the timer (one row per timer).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from beacon.core.clock import FrozenClock
from beacon.runtime import create_writer
from beacon.storage.transaction import Tx
from beacon.timers.store import Timer, schedule_many
from tests.beacon_process import DEADLINE_S, BeaconProcess
from tests.conftest import (
    NO_REDIS,
    REDIS_URL,
    delete_redis_keys,
    make_settings,
    new_postgres_database,
)
from tests.e2e.test_timers_processes import wait_for_workers

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

ADMIN_TOKEN = "crash-e2e-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PLUGIN = "beacon_crash_plugin"
TIMERS = 600
MESSAGES = 300

PLUGIN_SOURCE = '''
"""A consumer and a timer kind whose effects the crash test counts."""

import asyncio

from beacon.bus.messages import EVENTS_TOPIC, EventMessage
from beacon.workers.idempotency import first_time
from beacon.workers.registry import Consumer, TimerKind


def register(registry, platform):
    writer = platform.writer

    async def handle(envelopes):
        marked = [
            (e.id, m.properties["mark"])
            for e, m in ((e, EventMessage.from_body(e.body)) for e in envelopes)
            if "mark" in m.properties
        ]
        if not marked:
            return
        await asyncio.sleep(0.05)  # slow: a kill finds messages in hand and pending

        async def effects(tx):
            for message_id, mark in marked:
                if await first_time(tx, consumer="crash-effects", key=message_id):
                    await tx.sql.execute("INSERT INTO crash_effects (mark) VALUES (?)", mark)

        await writer.run(effects)

    async def fire(tx, timers):
        await asyncio.sleep(0.05)
        await tx.sql.executemany(
            "INSERT INTO crash_timer_effects (key) VALUES (?)", [(t.key,) for t in timers]
        )

    registry.consumer(Consumer("crash-effects", EVENTS_TOPIC, handle))
    registry.timer(TimerKind("crash-timer", fire))
'''

TABLES = (
    "CREATE TABLE crash_effects (mark VARCHAR(100) NOT NULL)",
    "CREATE TABLE crash_timer_effects (key VARCHAR(255) NOT NULL)",
)


@pytest.fixture
def database_url() -> Iterator[str]:
    if not REDIS_URL:
        pytest.skip(NO_REDIS)
    with new_postgres_database("beacon_crash") as url:
        yield url


async def query(database_url: str, *statements: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        rows: list[asyncpg.Record] = []
        for statement in statements:
            rows = await conn.fetch(statement)
        return rows
    finally:
        await conn.close()


async def schedule_due_timers(database_url: str, now: datetime) -> None:
    """Timers already due: the worker's runner fires them as soon as it looks."""
    writer, _ = create_writer(make_settings(database_url), FrozenClock(now))
    await writer.database.start()
    try:
        timers = [
            Timer(f"crash-{n:04d}", "crash-timer", now - timedelta(seconds=TIMERS - n))
            for n in range(TIMERS)
        ]

        async def add(tx: Tx) -> None:
            await schedule_many(tx, timers)

        await writer.run_now(add)
    finally:
        await writer.database.close()


def counts(database_url: str) -> tuple[dict[str, int], dict[str, int]]:
    effects = asyncio.run(
        query(database_url, "SELECT mark, count(*) AS n FROM crash_effects GROUP BY mark")
    )
    fired = asyncio.run(
        query(database_url, "SELECT key, count(*) AS n FROM crash_timer_effects GROUP BY key")
    )
    return {r["mark"]: r["n"] for r in effects}, {r["key"]: r["n"] for r in fired}


def test_a_worker_killed_while_timers_are_due_and_messages_pending_loses_and_repeats_nothing(
    database_url: str, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    prefix = f"beacon-crash-e2e-{uuid.uuid4().hex}"
    settings = {
        "clock": "manual",
        "plugins": PLUGIN,
        "bus_url": REDIS_URL or "",
        "bus_prefix": prefix,
        "relay_sweep_seconds": "0.5",
    }
    beacon = BeaconProcess.on(database_url, tmp_path, admin_token=ADMIN_TOKEN, settings=settings)
    beacon.env["PYTHONPATH"] = str(plugins)
    marks = [f"m-{n:04d}" for n in range(MESSAGES)]
    try:
        beacon.cli("migrate")
        beacon.cli("sources", "create", "Crash test", "--id", "web")
        asyncio.run(query(database_url, *TABLES))
        beacon.start()
        with httpx.Client(base_url=beacon.url, headers=ADMIN, timeout=30.0) as http:
            now = datetime.fromisoformat(http.get("/api/clock").json()["now"])
            asyncio.run(schedule_due_timers(database_url, now))
            for n, mark in enumerate(marks):
                body = {
                    "source": {"id": "web"},
                    "session": {"id": f"s-{n % 20}"},
                    "events": [{"type": "crash", "properties": {"mark": mark}}],
                }
                assert http.post("/track", json=body).status_code == 200
        first = beacon.spawn("worker", log="worker-0.log")
        wait_for_workers(beacon, ["worker-0.log"])
        deadline = time.monotonic() + DEADLINE_S
        while True:  # kill it once it has done some of both, before it has done all
            effects, fired = counts(database_url)
            if effects and fired:
                break
            assert time.monotonic() < deadline, "the worker did nothing"
            time.sleep(0.02)
        first.kill()
        assert first.wait(DEADLINE_S) == -9
        effects_before, fired_before = counts(database_url)

        second = beacon.spawn("worker", log="worker-1.log")
        wait_for_workers(beacon, ["worker-1.log"])
        deadline = time.monotonic() + 4 * DEADLINE_S  # a killed worker's leases lapse first
        while True:
            effects, fired = counts(database_url)
            if len(effects) == MESSAGES and len(fired) == TIMERS:
                break
            assert time.monotonic() < deadline, (len(effects), len(fired))
            time.sleep(0.1)
        time.sleep(1.0)  # room for a wrongful second effect
        effects, fired = counts(database_url)
        left = asyncio.run(
            query(database_url, "SELECT count(*) FROM timers WHERE kind = 'crash-timer'")
        )
        assert second.poll() is None, "the second worker exited"
    finally:
        beacon.kill_all()
        asyncio.run(delete_redis_keys(prefix))

    assert len(effects_before) < MESSAGES or len(fired_before) < TIMERS, "killed too late"
    assert effects == dict.fromkeys(marks, 1)  # every message handled, none twice
    assert fired == {f"crash-{n:04d}": 1 for n in range(TIMERS)}  # every timer fired once
    assert left[0][0] == 0
