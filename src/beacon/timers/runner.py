"""`TimerRunner`: claims due timers and fires them, and runs periodic jobs on the same rows.

Firing: a batch of due timers is claimed (`claims.claim_due`), then fired in one transaction
of the write path that deletes them (`claims.take_claimed`) and runs each kind's handler on its
timers, so a timer's effect commits exactly once. If a handler raises, the batch is fired again
timer by timer, each in a savepoint of one shared transaction: the others commit, and each
failing timer is kept with one more attempt, its error and a backoff (`claims.TimerBackoff`),
and logged (`timer_failed`); it is never dropped. The count of failing timers is a gauge.

Catch-up: timers that came due while no process ran (downtime, or a manual clock advanced by
days) fire as soon as a runner starts, oldest `run_at` first, each once, however late: nothing
due is skipped or merged. Lateness is measured on the business clock and exported.

Periodic jobs (`PeriodicJob`) are timers too, keyed `periodic:{name}`, scheduled idempotently
at start (`first_after` from then) so that one row stands for each across all processes. When
one fires, its job runs outside the firing transaction (jobs such as retention write through
the writer themselves) while the runner renews its claim, so the lease covers a long run; then
it is scheduled again at now + `every`, now being the business time when the run ended. A job
that missed several runs (downtime, an advance of days) thus runs once, not once per run
missed; a run that fails is logged (`periodic_job_failed`), counted as a failure and scheduled
like any other.

Wake-ups: at the next `run_at`; when a timer scheduled in this process commits; when a manual
clock moves; and every `poll_seconds` of real time, for what other processes scheduled. Stop:
the batch in flight is fired, running jobs get `stop_grace` seconds to finish, then are
cancelled and their claims released, so another process takes them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

import structlog

from beacon.core.clock import Clock, SystemClock
from beacon.storage.commit import CommitFailed, CommitterStopped
from beacon.storage.transaction import Tx
from beacon.storage.writer import Writer
from beacon.timers import claims
from beacon.timers.metrics import TimerMetrics
from beacon.timers.store import Timer, schedule, wake_on_schedule

log = structlog.get_logger()

FireTimers = Callable[[Tx, Sequence[Timer]], Awaitable[None]]
"""Acts on due timers of one kind inside the transaction that deletes them (so once each)."""

PERIODIC = "periodic:"
LEASE = timedelta(seconds=30)  # a batch is fired well within it; a dead process's claims lapse
JOB_LEASE = timedelta(seconds=60)  # renewed every third of it while a periodic job runs
STOP_GRACE_S = 10.0
OTHERS_WAIT_S = 60.0  # longer than a lease: a dead process's claims are taken over meanwhile
OTHERS_POLL_S = 0.05
STORE_FAILURES = (CommitFailed, CommitterStopped)  # the database's trouble, not the timer's


class Periodic(Protocol):
    """What the runner needs of a periodic job (`workers.registry.PeriodicJob`)."""

    @property
    def name(self) -> str: ...

    @property
    def every(self) -> timedelta: ...

    @property
    def run(self) -> Callable[[], Awaitable[Any]]: ...

    @property
    def first_after(self) -> timedelta: ...


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What `fire_due` did: timers due at the time it looked that have fired (here or in other
    processes), those still due (`failing`: their handler failed and they wait for a retry)."""

    fired: int
    still_due: int
    failing: int


class TimerRunner:
    def __init__(
        self,
        *,
        writer: Writer,
        clock: Clock,
        kinds: Mapping[str, FireTimers],
        periodic: Sequence[Periodic] = (),
        metrics: TimerMetrics | None = None,
        real_clock: Clock | None = None,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        lease: timedelta = LEASE,
        job_lease: timedelta = JOB_LEASE,
        backoff: claims.TimerBackoff | None = None,
        stop_grace: float = STOP_GRACE_S,
        name: str | None = None,
    ) -> None:
        for kind in kinds:
            if kind.startswith(PERIODIC):
                raise ValueError(f"timer kind {kind!r}: {PERIODIC}… names periodic jobs")
        self.writer = writer
        self.database = writer.database
        self.clock = clock
        self.metrics = metrics
        self.name = name or claims.claimer_name()
        self._handlers = dict(kinds)
        self._jobs = {f"{PERIODIC}{job.name}": job for job in periodic}
        self.kinds = sorted([*self._handlers, *self._jobs])
        self._real = real_clock or SystemClock()
        self._batch_size = batch_size
        self._poll = poll_seconds
        self._lease = lease
        self._job_lease = job_lease
        self._backoff = backoff or claims.TimerBackoff()
        self._stop_grace = stop_grace
        self._wake = asyncio.Event()
        self._sleeping_until: datetime | None = None
        self._running_jobs: set[asyncio.Task[None]] = set()
        wake_on_schedule(self)

    # --- being woken ---------------------------------------------------------------------------

    def scheduled(self, run_at: datetime) -> None:
        """A timer due at `run_at` was scheduled in this process: look again if it is earlier
        than the time this runner sleeps until."""
        if self._sleeping_until is None or run_at < self._sleeping_until:
            self._wake.set()

    def wake(self, *_: object) -> None:
        """Look for due timers now (the clock moved)."""
        self._wake.set()

    # --- running -------------------------------------------------------------------------------

    async def schedule_periodic(self) -> None:
        """Schedule each periodic job's timer unless it is pending already (in any process)."""
        if not self._jobs:
            return

        async def work(tx: Tx) -> None:
            for key, job in self._jobs.items():
                first = tx.now + min(job.first_after, job.every)
                await schedule(tx, key=key, kind=key, run_at=first)

        await self.writer.run(work)

    async def run(self, stop: asyncio.Event) -> None:
        """Fire timers as they come due until `stop` is set, then stop gracefully."""
        await self.schedule_periodic()
        while not stop.is_set():
            fired = 0
            self._wake.clear()  # before looking: whatever wakes it from now on is seen
            try:
                fired = await self.fire_batch()
            except Exception:
                log.exception("timers_pass_failed")
            if not fired:
                await self._sleep(stop)
        await self._stop_jobs()

    async def fire_batch(self, *, run_jobs_inline: bool = False) -> int:
        """Claim a batch of due timers and fire them; periodic jobs start in the background
        (or run before this returns, `run_jobs_inline`). Return how many were claimed."""
        claimed = await self.writer.run(self._claim)
        if not claimed:
            return 0
        timers = [t for t in claimed if t.kind in self._handlers]
        if timers:
            await self._fire(timers)
        for job_timer in (t for t in claimed if t.kind in self._jobs):
            if run_jobs_inline:
                await self._run_job(job_timer)
            else:
                task = asyncio.create_task(self._run_job(job_timer), name=job_timer.key)
                self._running_jobs.add(task)
                task.add_done_callback(self._running_jobs.discard)
        return len(claimed)

    async def fire_due(self, *, wait_for_others: float = OTHERS_WAIT_S) -> CatchUp:
        """Fire every timer due at the clock's time now, here and alongside other processes,
        until none is left that some process could still fire (failing ones wait for their
        backoff). Waits at most `wait_for_others` seconds for others' claims without progress."""
        until = self.clock.now()
        before = await self._due(until)
        stalled_since: float | None = None
        while True:
            if await self.fire_batch(run_jobs_inline=True):
                stalled_since = None
                continue
            due = await self._due(until)
            if due.claimable + due.in_flight == 0:
                break
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > wait_for_others:
                log.warning("timers_still_held", in_flight=due.in_flight, until=until.isoformat())
                break
            await asyncio.sleep(OTHERS_POLL_S)  # real time: other processes are firing them
        after = await self._due(until)
        return CatchUp(max(0, before.total - after.total), after.total, after.backing_off)

    async def read_gauges(self) -> None:
        """Count pending and failing timers into the gauges (when `/metrics` is read: counting
        a million pending timers takes tens of milliseconds, which firing never waits for)."""
        if self.metrics is None:
            return
        counts = await claims.count_timers(self.database.read)
        self.metrics.pending.set(counts.pending)
        self.metrics.failing.set(counts.failing)

    # --- firing --------------------------------------------------------------------------------

    async def _claim(self, tx: Tx) -> list[Timer]:
        return await claims.claim_due(
            tx,
            now=tx.now,
            kinds=self.kinds,
            claimer=self.name,
            real_now=self._real.now(),
            lease=self._lease,
            limit=self._batch_size,
        )

    async def _fire_in(self, tx: Tx, *, keys: Sequence[str]) -> tuple[list[Timer], datetime]:
        timers = await claims.take_claimed(tx, keys=keys, claimer=self.name)
        by_kind: dict[str, list[Timer]] = {}
        for timer in timers:
            by_kind.setdefault(timer.kind, []).append(timer)
        for kind, group in by_kind.items():
            await self._handlers[kind](tx, group)
        return timers, tx.now

    async def _fire(self, timers: list[Timer]) -> None:
        keys = [t.key for t in timers]
        try:
            self._count(*await self.writer.run(partial(self._fire_in, keys=keys)))
            return
        except STORE_FAILURES:
            log.warning("timers_fire_failed", timers=len(timers), exc_info=True)
            return  # their claims lapse, and they are fired then
        except Exception as exc:
            if len(timers) == 1:
                await self._record_failures([(timers[0], exc)])
                return
        # One handler failed the batch: fire each timer alone (one transaction, a savepoint
        # each), so the others commit and only the failing ones are kept for a retry.
        outcomes = await asyncio.gather(
            *(self.writer.run(partial(self._fire_in, keys=[t.key])) for t in timers),
            return_exceptions=True,
        )
        failures: list[tuple[Timer, BaseException]] = []
        for timer, outcome in zip(timers, outcomes, strict=True):
            if isinstance(outcome, STORE_FAILURES):
                continue
            if isinstance(outcome, BaseException):
                failures.append((timer, outcome))
            else:
                self._count(*outcome)
        await self._record_failures(failures)

    async def _record_failures(self, failures: list[tuple[Timer, BaseException]]) -> None:
        if not failures:
            return
        for timer, exc in failures:
            log.error(
                "timer_failed",
                key=timer.key,
                kind=timer.kind,
                attempts=timer.attempts + 1,
                retry_in_s=self._backoff.delay(timer.attempts + 1).total_seconds(),
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
            if self.metrics is not None:
                self.metrics.failures.labels(timer.kind).inc()
        errors = [(timer, f"{type(exc).__name__}: {exc}") for timer, exc in failures]
        await self.writer.run(
            lambda tx: claims.record_failures(
                tx,
                failures=errors,
                claimer=self.name,
                real_now=self._real.now(),
                backoff=self._backoff,
            )
        )

    def _count(self, timers: list[Timer], fired_at: datetime) -> None:
        if self.metrics is None:
            return
        for timer in timers:
            self.metrics.fired.labels(timer.kind).inc()
            self.metrics.lateness.observe(max(0.0, (fired_at - timer.run_at).total_seconds()))

    # --- periodic jobs -------------------------------------------------------------------------

    async def _run_job(self, timer: Timer) -> None:
        job = self._jobs[timer.key]
        renewing = asyncio.create_task(self._keep_claim(timer.key), name=f"{timer.key}-lease")
        error: str | None = None
        try:
            await job.run()
        except asyncio.CancelledError:
            renewing.cancel()
            await self.writer.run(
                lambda tx: claims.release(tx, keys=[timer.key], claimer=self.name)
            )
            raise
        except Exception as exc:
            log.exception("periodic_job_failed", job=job.name)
            error = f"{type(exc).__name__}: {exc}"
            if self.metrics is not None:
                self.metrics.failures.labels(timer.kind).inc()
        finally:
            renewing.cancel()

        async def reschedule(tx: Tx) -> bool:
            return await claims.finish_run(
                tx, key=timer.key, claimer=self.name, next_run_at=tx.now + job.every, error=error
            )

        if await self.writer.run(reschedule) and self.metrics is not None:
            self.metrics.fired.labels(timer.kind).inc()
            self.metrics.lateness.observe(
                max(0.0, (self.clock.now() - timer.run_at).total_seconds())
            )

    async def _keep_claim(self, key: str) -> None:
        """Renew the claim on a running job's timer every third of its lease."""
        while True:
            until = self._real.now() + self._job_lease

            async def renew(tx: Tx, until: datetime = until) -> bool:
                return await claims.renew(tx, key=key, claimer=self.name, until=until)

            try:
                if not await self.writer.run(renew):
                    log.warning("periodic_job_claim_lost", key=key)
                    return
            except STORE_FAILURES:
                log.warning("periodic_job_claim_not_renewed", key=key, exc_info=True)
            await asyncio.sleep(self._job_lease.total_seconds() / 3)  # real time: a lease

    async def _stop_jobs(self) -> None:
        if not self._running_jobs:
            return
        running = set(self._running_jobs)
        _, late = await asyncio.wait(running, timeout=self._stop_grace)
        for task in late:
            log.warning("periodic_job_cancelled", job=task.get_name())
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    # --- waiting -------------------------------------------------------------------------------

    async def _sleep(self, stop: asyncio.Event) -> None:
        """Wait until the next timer is due, something wakes the runner, or a poll passes."""
        now = self.clock.now()
        delay = self._poll
        with contextlib.suppress(Exception):  # a failed read: poll again later
            upcoming = await claims.next_run_at(self.database.read, after=now)
            if upcoming is not None:
                delay = min(delay, (upcoming - now).total_seconds())
        self._sleeping_until = now + timedelta(seconds=delay)
        waits = {asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())}
        try:
            await asyncio.wait(waits, timeout=max(0.0, delay), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            self._sleeping_until = None

    async def _due(self, until: datetime) -> claims.DueTimers:
        return await claims.due_timers(
            self.database.read, until=until, kinds=self.kinds, real_now=self._real.now()
        )
