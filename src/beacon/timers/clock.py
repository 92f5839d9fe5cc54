"""The deployment's clock: the system's, or a manual one that tests and demos move by hand.

`BEACON_CLOCK=manual` makes business time (event times, retention, timers, everything that
reads the `Clock`) stand still until `advance` moves it. The time lives in the database's
`manual_clock` row, created at first use from the real time, so every process of the deployment
shares it: each keeps a copy, reads the row again every `REFRESH_S` (a short poll) and never
goes back. A process that advances the clock knows the new time at once; the others within a
poll. Production refuses the manual clock (`Settings`).

Operational waits are not business time and do not stand still with it: claim leases, backoffs,
cache lifetimes and polls are measured on the real clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from beacon.core.clock import Clock, SystemClock
from beacon.settings import Settings
from beacon.storage.database import Database
from beacon.storage.transaction import Tx
from beacon.storage.writer import Writer
from beacon.timers.store import stored_time

log = structlog.get_logger()

REFRESH_S = 0.25
CLOCK_ROW = 1
MAX_ADVANCE = timedelta(days=36_525)  # a century: past it, a typo rather than a test
# The manual clock goes no later: what Beacon computes ahead of its time (rolling windows,
# leases, retention, a day of event-time leeway) must stay within the years datetimes hold.
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class ClockError(Exception):
    """An advance the clock refuses; the message says why."""

    code = "clock_refused"


class NotManual(ClockError):
    """The deployment runs on the system clock, which nobody moves."""

    code = "not_manual"


class NotForward(ClockError):
    """The time asked for is not after the clock's time."""

    code = "not_forward"


class TooFar(ClockError):
    """The advance is larger than `MAX_ADVANCE`, or would pass `LATEST`."""

    code = "too_far"


@dataclass(frozen=True, slots=True)
class Advance:
    """The clock moved from `previous` to `now`."""

    previous: datetime
    now: datetime


class ManualClock:
    """Business time kept in the `manual_clock` row, moved only by `advance`."""

    def __init__(self, *, real: Clock | None = None, refresh_every: float = REFRESH_S) -> None:
        self._real = real or SystemClock()
        self._refresh_every = refresh_every
        self._now: datetime | None = None
        self._database: Database | None = None
        self._listeners: list[Callable[[datetime], None]] = []
        self._task: asyncio.Task[None] | None = None

    def now(self) -> datetime:
        if self._now is None:
            raise RuntimeError("the manual clock is read before it was started")
        return self._now

    def on_change(self, listener: Callable[[datetime], None]) -> None:
        """Call `listener` with the new time whenever this process learns the clock moved."""
        self._listeners.append(listener)

    async def start(self, database: Database, writer: Writer) -> None:
        """Read the shared time (creating it from the real time if nobody has yet), then keep
        it fresh. Called before this process writes anything else (it commits at once)."""
        self._database = database
        stored = await self._read()
        if stored is None:
            self._now = self._real.now()  # the time of the transaction creating the row
            await writer.run_now(self._create)
            stored = await self._read()
            assert stored is not None
        self._now = stored
        self._task = asyncio.create_task(self._keep_fresh(), name="manual-clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> None:
        """Read the shared time now (it only ever moves forward)."""
        stored = await self._read()
        if stored is not None:
            self._moved_to(stored)

    async def advance(
        self, writer: Writer, *, by: timedelta | None = None, to: datetime | None = None
    ) -> Advance:
        """Move the shared time forward `by` or `to` (exactly one), for every process."""
        if (by is None) == (to is None):
            raise ValueError("advance by a duration or to a time, not both or neither")
        if by is not None and by <= timedelta(0):
            raise NotForward(f"the clock only moves forward: {by.total_seconds():g} s is not")
        if by is not None and by > MAX_ADVANCE:
            raise TooFar(f"an advance of more than {MAX_ADVANCE.days} days is refused")
        if to is not None and to.tzinfo is None:
            raise ValueError("the time to advance to needs a timezone")

        async def move(tx: Tx) -> Advance:
            rows = await tx.sql.fetch(
                "SELECT now FROM manual_clock WHERE id = ?"
                + (" FOR UPDATE" if tx.dialect == "postgresql" else ""),
                CLOCK_ROW,
            )
            previous = stored_time(rows[0][0])
            target = previous + by if by is not None else to
            assert target is not None
            if target <= previous:
                raise NotForward(
                    f"the clock only moves forward: {target.isoformat()} is not after its"
                    f" time, {previous.isoformat()}"
                )
            if target - previous > MAX_ADVANCE:
                raise TooFar(f"an advance of more than {MAX_ADVANCE.days} days is refused")
            if target > LATEST:
                raise TooFar(f"the manual clock goes no later than {LATEST.isoformat()}")
            await tx.sql.execute("UPDATE manual_clock SET now = ? WHERE id = ?", target, CLOCK_ROW)
            return Advance(previous, target)

        advanced = await writer.run(move)
        self._moved_to(advanced.now)
        log.info(
            "clock_advanced", previous=advanced.previous.isoformat(), now=advanced.now.isoformat()
        )
        return advanced

    async def _create(self, tx: Tx) -> None:
        await tx.sql.execute(
            "INSERT INTO manual_clock (id, now) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
            CLOCK_ROW,
            tx.now,
        )

    async def _read(self) -> datetime | None:
        assert self._database is not None
        rows = await self._database.read("SELECT now FROM manual_clock WHERE id = ?", CLOCK_ROW)
        return stored_time(rows[0][0]) if rows else None

    def _moved_to(self, value: datetime) -> None:
        if self._now is not None and value <= self._now:
            return
        self._now = value
        for listener in self._listeners:
            listener(value)

    async def _keep_fresh(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._refresh_every)  # real time: a poll, not business time
            try:
                await self.refresh()
            except Exception:  # the database is away: keep the last time known, try again
                if not failing:  # once per outage, not four times a second
                    log.warning("manual_clock_refresh_failed", exc_info=True)
                failing = True
            else:
                if failing:
                    log.info("manual_clock_refreshed_again", now=self.now().isoformat())
                failing = False


def clock_of(settings: Settings) -> Clock:
    """The clock `BEACON_CLOCK` names (a manual one must be started before it is read)."""
    return ManualClock() if settings.clock == "manual" else SystemClock()
