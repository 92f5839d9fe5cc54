"""A plugin (`BEACON_PLUGINS=tests.timer_plugin`) with a timer kind whose effect is a row of
`timer_effects` per firing, and a periodic job counting its runs there too, for tests that
check what fired, how often, and in which process.

The table has no key: a timer fired twice would leave two rows, which the tests count.
A timer whose payload holds `"fail": true` makes the handler raise after writing its row.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta

from beacon.platform import Platform
from beacon.storage.transaction import Tx
from beacon.timers.store import Timer
from beacon.workers.registry import PeriodicJob, Registry, TimerKind

KIND = "test-effect"
JOB = "test-tick"
JOB_EVERY = timedelta(hours=1)
SEQUENCE = {"sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT", "postgresql": "BIGSERIAL PRIMARY KEY"}


def create_table_sql(dialect: str) -> str:
    """The effects table; `seq` keeps the order effects were written in."""
    return (
        f"CREATE TABLE IF NOT EXISTS timer_effects (seq {SEQUENCE[dialect]},"
        " key VARCHAR(255) NOT NULL, fired_by VARCHAR(50) NOT NULL, run_at VARCHAR(40) NOT NULL,"
        " fired_at VARCHAR(40) NOT NULL)"
    )


class Refused(Exception):
    """The handler's own failure, asked for by the timer's payload."""


async def record_effects(tx: Tx, timers: Sequence[Timer]) -> None:
    """Write one row per timer fired (the effect), then fail if a timer asks for it."""
    await tx.sql.executemany(
        "INSERT INTO timer_effects (key, fired_by, run_at, fired_at) VALUES (?, ?, ?, ?)",
        [(t.key, str(os.getpid()), t.run_at.isoformat(), tx.now.isoformat()) for t in timers],
    )
    failing = [t.key for t in timers if t.payload.get("fail")]
    if failing:
        raise Refused(f"asked to fail: {', '.join(failing)}")


def register(registry: Registry, platform: Platform) -> None:
    registry.timer(TimerKind(KIND, record_effects))

    async def tick() -> None:
        async def work(tx: Tx) -> None:
            await tx.sql.execute(
                "INSERT INTO timer_effects (key, fired_by, run_at, fired_at) VALUES (?, ?, ?, ?)",
                JOB,
                str(os.getpid()),
                "",
                tx.now.isoformat(),
            )

        await platform.writer.run(work)

    registry.periodic(PeriodicJob(JOB, JOB_EVERY, tick))
