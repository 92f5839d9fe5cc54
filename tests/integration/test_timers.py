"""Durable timers on both databases: scheduling is idempotent by key, reschedule and cancel act
on pending timers, due timers fire once each (oldest first after downtime), a claim whose
process died is taken over after its lease, a failing handler keeps its timer for a retry, and
periodic jobs run once per interval. Business time is a `FrozenClock`, real time another one:
nothing sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from beacon.core.clock import FrozenClock
from beacon.runtime import create_writer
from beacon.storage.transaction import Tx
from beacon.storage.writer import Writer
from beacon.timers import claims
from beacon.timers.metrics import TimerMetrics
from beacon.timers.runner import LEASE, TimerRunner
from beacon.timers.store import Timer, cancel, pending_timer, reschedule, schedule
from tests.conftest import make_settings
from tests.timer_plugin import Refused, create_table_sql, record_effects

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REAL_T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)  # real time: deliberately not business time
KIND = "test-effect"


@dataclass
class Clocks:
    business: FrozenClock = field(default_factory=lambda: FrozenClock(T0))
    real: FrozenClock = field(default_factory=lambda: FrozenClock(REAL_T0))


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
async def writer(database_url: str, clocks: Clocks) -> AsyncIterator[Writer]:
    writer, _ = create_writer(make_settings(database_url), clocks.business)
    await writer.database.start()
    writer.start()
    await writer.run(lambda tx: tx.sql.execute(create_table_sql(tx.dialect)))
    await writer.run(lambda tx: tx.sql.execute("DELETE FROM timer_effects"))
    try:
        yield writer
    finally:
        await writer.stop()
        await writer.database.close()


def runner_on(writer: Writer, clocks: Clocks, *, name: str, **options: Any) -> TimerRunner:
    return TimerRunner(
        writer=writer,
        clock=clocks.business,
        kinds={KIND: record_effects},
        real_clock=clocks.real,
        name=name,
        **options,
    )


@pytest.fixture
def runner(writer: Writer, clocks: Clocks) -> TimerRunner:
    return runner_on(writer, clocks, name="runner-a")


async def add(writer: Writer, key: str, run_at: datetime, **payload: Any) -> bool:
    return await writer.run(
        lambda tx: schedule(tx, key=key, kind=KIND, run_at=run_at, payload=payload)
    )


async def effects(writer: Writer) -> list[str]:
    """The keys of the timers whose effect committed, in the order they fired."""
    rows = await writer.database.read("SELECT key FROM timer_effects ORDER BY seq")
    return [str(row[0]) for row in rows]


async def pending(writer: Writer, key: str) -> Timer | None:
    return await pending_timer(writer.database.read, key=key)


async def fire_all(runner: TimerRunner) -> int:
    """Claim and fire batches until none is due; return how many were claimed."""
    total = 0
    while claimed := await runner.fire_batch():
        total += claimed
    return total


# --- schedule, reschedule, cancel ---------------------------------------------------------------


async def test_scheduling_a_pending_key_again_changes_nothing(writer: Writer) -> None:
    first = await add(writer, "trial-ends:ann", T0 + timedelta(days=14), plan="pro")
    again = await add(writer, "trial-ends:ann", T0 + timedelta(days=1), plan="free")

    timer = await pending(writer, "trial-ends:ann")
    assert (first, again) == (True, False)
    assert timer == Timer("trial-ends:ann", KIND, T0 + timedelta(days=14), {"plan": "pro"}, 0)


async def test_a_timer_scheduled_in_a_rolled_back_transaction_does_not_exist(
    writer: Writer,
) -> None:
    async def schedule_then_refuse(tx: Tx) -> None:
        await schedule(tx, key="doomed", kind=KIND, run_at=T0)
        raise Refused("the domain's own write failed")

    with pytest.raises(Refused):
        await writer.run(schedule_then_refuse)

    assert await pending(writer, "doomed") is None


async def test_reschedule_moves_a_pending_timer_and_cancel_deletes_it(
    writer: Writer, runner: TimerRunner, clocks: Clocks
) -> None:
    await add(writer, "moved", T0)
    await add(writer, "cancelled", T0)
    await add(writer, "kept", T0)

    moved = await writer.run(lambda tx: reschedule(tx, key="moved", run_at=T0 + timedelta(hours=1)))
    cancelled = await writer.run(lambda tx: cancel(tx, key="cancelled"))
    unknown = await writer.run(lambda tx: reschedule(tx, key="never", run_at=T0))
    await fire_all(runner)
    fired_at_t0 = await effects(writer)
    clocks.business.advance(timedelta(hours=1))
    await fire_all(runner)

    assert (moved, cancelled, unknown) == (True, True, False)
    assert fired_at_t0 == ["kept"]
    assert await effects(writer) == ["kept", "moved"]
    assert await writer.run(lambda tx: cancel(tx, key="cancelled")) is False


async def test_a_fired_key_may_be_scheduled_again(writer: Writer, runner: TimerRunner) -> None:
    await add(writer, "reminder", T0)
    await fire_all(runner)

    again = await add(writer, "reminder", T0)
    await fire_all(runner)

    assert again is True
    assert await effects(writer) == ["reminder", "reminder"]


async def test_bad_timers_are_refused_naming_the_problem(writer: Writer) -> None:
    naive = datetime(2026, 3, 1)  # noqa: DTZ001 - the mistake under test
    with pytest.raises(ValueError, match="timezone-aware"):
        await add(writer, "naive", naive)
    with pytest.raises(ValueError, match="payload of"):
        await add(writer, "big", T0, blob="x" * 20_000)
    with pytest.raises(ValueError, match="key has 1 to 255"):
        await add(writer, "", T0)


# --- firing -------------------------------------------------------------------------------------


async def test_overdue_timers_fire_at_once_oldest_first_and_future_ones_wait(
    writer: Writer, runner: TimerRunner, clocks: Clocks
) -> None:
    for key, hours in [("b", -2), ("future", 1), ("d", 0), ("a", -72), ("c", -1)]:
        await add(writer, key, T0 + timedelta(hours=hours))

    fired = await fire_all(runner)

    assert fired == 4
    assert await effects(writer) == ["a", "b", "c", "d"]
    assert await pending(writer, "future") is not None
    clocks.business.advance(timedelta(hours=1))
    assert await fire_all(runner) == 1
    assert await pending(writer, "future") is None


async def test_each_timer_fires_once_however_many_batches(writer: Writer, clocks: Clocks) -> None:
    runner = runner_on(writer, clocks, name="small-batches", batch_size=7)
    keys = [f"t{n:03d}" for n in range(100)]
    for key in keys:
        await add(writer, key, T0 - timedelta(seconds=len(keys) - int(key[1:])))

    await fire_all(runner)
    await fire_all(runner)

    assert await effects(writer) == keys


async def test_a_claim_is_taken_over_only_after_its_lease(
    writer: Writer, runner: TimerRunner, clocks: Clocks
) -> None:
    await add(writer, "orphan", T0)
    dead = runner_on(writer, clocks, name="dead-process")
    # The other process claims the timer and dies before firing it.
    claimed = await writer.run(dead._claim)

    before_lease = await runner.fire_batch()
    clocks.real.advance(LEASE + timedelta(seconds=1))
    after_lease = await runner.fire_batch()
    late_fire = await writer.run(
        lambda tx: claims.take_claimed(tx, keys=["orphan"], claimer="dead-process")
    )

    assert [t.key for t in claimed] == ["orphan"]
    assert (before_lease, after_lease) == (0, 1)
    assert late_fire == []  # the dead process, back, finds nothing to fire
    assert await effects(writer) == ["orphan"]


async def test_the_lease_is_real_time_not_business_time(
    writer: Writer, runner: TimerRunner, clocks: Clocks
) -> None:
    await add(writer, "held", T0)
    dead = runner_on(writer, clocks, name="dead-process")
    await writer.run(dead._claim)

    clocks.business.advance(timedelta(days=30))  # a manual clock moved a month
    taken = await runner.fire_batch()

    assert taken == 0


async def test_a_timer_rescheduled_while_claimed_fires_once_at_its_new_time(
    writer: Writer, runner: TimerRunner, clocks: Clocks
) -> None:
    await add(writer, "moving", T0)
    claimed = await writer.run(runner._claim)
    await writer.run(lambda tx: reschedule(tx, key="moving", run_at=T0 + timedelta(hours=2)))

    fired_now = await writer.run(
        lambda tx: claims.take_claimed(tx, keys=[t.key for t in claimed], claimer=runner.name)
    )
    clocks.business.advance(timedelta(hours=2))
    await fire_all(runner)

    assert fired_now == []
    assert await effects(writer) == ["moving"]


async def test_a_failing_timer_is_kept_with_a_growing_backoff_and_the_others_fire(
    writer: Writer, runner: TimerRunner, clocks: Clocks
) -> None:
    await add(writer, "ok-1", T0 - timedelta(seconds=2))
    await add(writer, "broken", T0 - timedelta(seconds=1), fail=True)
    await add(writer, "ok-2", T0)

    with capture_logs() as logs:
        await fire_all(runner)
    first = await pending(writer, "broken")
    retry_too_soon = await runner.fire_batch()
    clocks.real.advance(timedelta(seconds=1))
    await fire_all(runner)
    second = await pending(writer, "broken")
    [(_, error, retry_at)] = await claims.failing_timers(writer.database.read, limit=10)
    counts = await claims.count_timers(writer.database.read)

    assert await effects(writer) == ["ok-1", "ok-2"]  # the failing one's effect rolled back
    assert first is not None and first.attempts == 1
    assert retry_too_soon == 0
    assert second is not None and second.attempts == 2
    assert error is not None and "asked to fail: broken" in error
    assert retry_at == REAL_T0 + timedelta(seconds=1) + timedelta(seconds=2)  # 1 s, then 2 s
    assert (counts.pending, counts.failing) == (1, 1)
    failed = [e for e in logs if e["event"] == "timer_failed"]
    assert failed[0]["key"] == "broken" and failed[0]["attempts"] == 1


async def test_a_timer_that_stops_failing_fires_and_is_no_longer_counted_failing(
    writer: Writer, runner: TimerRunner, clocks: Clocks
) -> None:
    await add(writer, "flaky", T0, fail=True)
    await fire_all(runner)
    await writer.run(lambda tx: tx.sql.execute("UPDATE timers SET payload = '{}'"))

    clocks.real.advance(timedelta(seconds=1))
    await fire_all(runner)

    assert await effects(writer) == ["flaky"]
    assert await claims.count_timers(writer.database.read) == claims.TimerCounts(0, 0)


def test_the_backoff_doubles_up_to_its_cap() -> None:
    backoff = claims.TimerBackoff(base=timedelta(seconds=1), cap=timedelta(minutes=1))

    delays = [backoff.delay(n).total_seconds() for n in (1, 2, 3, 6, 7, 10_000)]

    assert delays == [1, 2, 4, 32, 60, 60]


# --- periodic jobs ------------------------------------------------------------------------------


@dataclass
class CountingJob:
    name: str = "tick"
    every: timedelta = timedelta(hours=1)
    first_after: timedelta = timedelta(seconds=30)
    runs: list[datetime] = field(default_factory=list)
    fail: bool = False
    clock: FrozenClock | None = None

    @property
    def run(self) -> Any:
        async def run() -> None:
            assert self.clock is not None
            self.runs.append(self.clock.now())
            if self.fail:
                raise Refused("the job failed")

        return run


async def test_a_periodic_job_runs_once_per_interval_and_once_after_missed_runs(
    writer: Writer, clocks: Clocks
) -> None:
    job = CountingJob(clock=clocks.business)
    runner = runner_on(writer, clocks, name="jobs", periodic=[job])
    await runner.schedule_periodic()
    other_process = runner_on(writer, clocks, name="other", periodic=[job])
    await other_process.schedule_periodic()  # idempotent: one row for the job

    async def after(delta: timedelta) -> int:
        clocks.business.advance(delta)
        seen = len(job.runs)
        await runner.fire_batch(run_jobs_inline=True)
        await other_process.fire_batch(run_jobs_inline=True)
        return len(job.runs) - seen

    ran = [
        await after(timedelta(seconds=29)),  # before first_after
        await after(timedelta(seconds=1)),  # first run
        await after(timedelta(minutes=59)),  # within the hour
        await after(timedelta(minutes=1)),  # the hour
        await after(timedelta(days=3)),  # 72 runs missed: one run, no backfill
        await after(timedelta(minutes=59, seconds=59)),
        await after(timedelta(seconds=1)),
    ]

    assert ran == [0, 1, 0, 1, 1, 0, 1]
    timer = await pending(writer, "periodic:tick")
    assert timer is not None and timer.run_at == clocks.business.now() + timedelta(hours=1)


async def test_a_failing_periodic_job_is_logged_counted_and_scheduled_again(
    writer: Writer, clocks: Clocks
) -> None:
    job = CountingJob(clock=clocks.business, fail=True)
    runner = runner_on(writer, clocks, name="jobs", periodic=[job])
    await runner.schedule_periodic()

    clocks.business.advance(timedelta(seconds=30))
    with capture_logs() as logs:
        await runner.fire_batch(run_jobs_inline=True)
    job.fail = False
    clocks.business.advance(timedelta(hours=1))
    counts_failing = await claims.count_timers(writer.database.read)
    await runner.fire_batch(run_jobs_inline=True)

    assert len(job.runs) == 2
    assert [e["job"] for e in logs if e["event"] == "periodic_job_failed"] == ["tick"]
    assert counts_failing.failing == 1
    assert (await claims.count_timers(writer.database.read)).failing == 0


async def test_a_running_job_holds_its_claim_beyond_the_first_lease(
    writer: Writer, clocks: Clocks
) -> None:
    job = CountingJob(clock=clocks.business)
    runner = runner_on(writer, clocks, name="jobs", periodic=[job])
    other = runner_on(writer, clocks, name="other", periodic=[job])
    await runner.schedule_periodic()
    clocks.business.advance(timedelta(seconds=30))
    [timer] = await writer.run(runner._claim)

    renewed = await writer.run(
        lambda tx: claims.renew(
            tx, key=timer.key, claimer="jobs", until=clocks.real.now() + timedelta(minutes=1)
        )
    )
    clocks.real.advance(LEASE + timedelta(seconds=1))  # past the claim's lease, not the renewal
    taken = await other.fire_batch(run_jobs_inline=True)

    assert renewed is True
    assert taken == 0 and job.runs == []


# --- concurrent processes -----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_concurrent_claimers_fire_every_timer_exactly_once(
    database_url: str, writer: Writer, clocks: Clocks
) -> None:
    keys = [f"t{n:05d}" for n in range(3000)]
    await writer.run(
        lambda tx: tx.sql.executemany(
            "INSERT INTO timers (key, kind, run_at, payload, attempts, created_at)"
            " VALUES (?, ?, ?, '{}', 0, ?)",
            [(key, KIND, T0 - timedelta(seconds=n % 60), T0) for n, key in enumerate(keys)],
        )
    )
    processes: list[tuple[Writer, TimerRunner, CollectorRegistry]] = []
    for n in range(4):  # a write path each, as separate processes have
        own, _ = create_writer(make_settings(database_url), clocks.business)
        await own.database.start()
        own.start()
        registry = CollectorRegistry()
        metrics = TimerMetrics(registry)
        runner = runner_on(own, clocks, name=f"process-{n}", batch_size=50, metrics=metrics)
        processes.append((own, runner, registry))
    try:
        await asyncio.gather(*(fire_all(runner) for _, runner, _ in processes))
    finally:
        for own, _, _ in processes:
            await own.stop()
            await own.database.close()

    rows = await writer.database.read("SELECT key, count(*) FROM timer_effects GROUP BY key")
    assert sorted(str(key) for key, _ in rows) == keys
    assert {int(count) for _, count in rows} == {1}
    fired_by = [
        registry.get_sample_value("beacon_timers_fired_total", {"kind": KIND}) or 0
        for _, _, registry in processes
    ]
    assert sum(fired_by) == len(keys)
    assert sum(1 for count in fired_by if count) >= 2, fired_by  # they did share the work
    assert await claims.count_timers(writer.database.read) == claims.TimerCounts(0, 0)


async def test_stopping_cancels_a_job_past_its_grace_and_frees_its_timer_at_once(
    writer: Writer, clocks: Clocks
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    @dataclass
    class EndlessJob:
        name: str = "endless"
        every: timedelta = timedelta(hours=1)
        first_after: timedelta = timedelta(0)

        @property
        def run(self) -> Any:
            async def run() -> None:
                started.set()
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    cancelled.set()
                    raise

            return run

    runner = runner_on(writer, clocks, name="stopping", periodic=[EndlessJob()], stop_grace=0.01)
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await asyncio.wait_for(started.wait(), timeout=10)

    stop.set()
    await asyncio.wait_for(running, timeout=10)
    timer = await pending(writer, "periodic:endless")
    [(claimed_by,)] = await writer.database.read(
        "SELECT claimed_by FROM timers WHERE key = ?", "periodic:endless"
    )

    assert cancelled.is_set()
    assert timer is not None and timer.run_at == T0  # still due: the next process runs it
    assert claimed_by is None
