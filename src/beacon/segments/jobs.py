"""What runs recomputes: the periodic job `segments-recompute`, and the command line.

The job (every 30 s, and at once when a definition is saved: saving moves its timer to now)
takes each segment and attribute waiting for a build, builds it (`recompute`) and flips it,
records the system events of the changes, and drops the states no live definition reads any
more. It runs once across processes; a second run started meanwhile (a save moved the timer
while the first ran) takes other builds: each build has its own lease.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import structlog

from beacon.core.clock import SystemClock
from beacon.core.ids import new_id
from beacon.platform import Platform
from beacon.segments import recompute, sql_build
from beacon.segments.catalog import load_catalog
from beacon.storage.transaction import Tx
from beacon.storage.writer import Writer
from beacon.timers import store
from beacon.workers.registry import PeriodicJob

log = structlog.get_logger()
T = TypeVar("T")

JOB = "segments-recompute"
JOB_KEY = f"periodic:{JOB}"
EVERY = timedelta(seconds=30)
BATCH = 500
RECORD_BATCH = 1000
DROP_BATCH = 5000


async def nudge(tx: Tx) -> None:
    """Make the recompute job due now (in the transaction saving a definition)."""
    if not await store.reschedule(tx, key=JOB_KEY, run_at=tx.now):
        await store.schedule(tx, key=JOB_KEY, kind=JOB_KEY, run_at=tx.now)


class Recomputer:
    """Builds what waits to be built, through one process's write path."""

    def __init__(
        self, writer: Writer, *, keep_days: int, batch: int = BATCH, owner: str | None = None
    ) -> None:
        self.writer = writer
        self.keep_days = keep_days
        self.batch = batch
        self.owner = owner or f"recompute-{new_id()}"
        self.real = SystemClock()  # leases are operational: real time

    async def _run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        return await self.writer.run(work)

    async def run_pending(self) -> int:
        """Build and flip everything waiting; return how many builds flipped."""
        flipped = 0
        while True:
            build = await self._run(
                lambda tx: recompute.claim_segment(tx, owner=self.owner, real_now=self.real.now())
            )
            if build is None:
                break
            flipped += await self.build_segment(build)
        while True:
            attribute = await self._run(
                lambda tx: recompute.claim_attribute(tx, owner=self.owner, real_now=self.real.now())
            )
            if attribute is None:
                break
            flipped += await self.build_attribute(attribute)
        await self.record_changes()
        if flipped:
            await self.drop_unused_states()
        return flipped

    async def build_segment(
        self, build: recompute.SegmentBuild, progress: recompute.Progress | None = None
    ) -> bool:
        """Build a claimed segment version and flip it; False if the run lost it meanwhile."""
        try:
            await self.build(build, progress)
            flipped = await self._run(lambda tx: recompute.flip(tx, build))
        except recompute.LeaseLost:
            log.info("segment_build_taken_over", segment=build.name, version=build.version)
            return False
        if flipped:
            log.info("segment_recomputed", segment=build.name, version=build.version)
            await self.record_changes()
        return flipped

    async def build(
        self, build: recompute.SegmentBuild, progress: recompute.Progress | None = None
    ) -> None:
        """Build a claimed version aside (by SQL where it can, else profile by profile)."""
        if not await self._build_by_sql(build, progress):
            await self._build_batches(build, progress)

    async def _build_by_sql(
        self, build: recompute.SegmentBuild, progress: recompute.Progress | None
    ) -> bool:
        """Build by SQL where it can (PostgreSQL); False leaves it to the Python path."""
        if self.writer.database.dialect != "postgresql" or not sql_build.supports(build.rule):
            return False
        try:
            await sql_build.build(self.writer, build, keep_days=self.keep_days, progress=progress)
        except recompute.LeaseLost:
            raise
        except Exception:  # the Python path is the reference: it builds what SQL could not
            log.exception("segment_sql_build_failed", segment=build.name, version=build.version)
            return False
        return True

    async def _build_batches(
        self, build: recompute.SegmentBuild, progress: recompute.Progress | None
    ) -> None:
        after, done = "", 0
        while True:

            async def batch(tx: Tx, after: str = after) -> list[str]:
                return await recompute.build_batch(
                    tx,
                    build,
                    after=after,
                    limit=self.batch,
                    keep_days=self.keep_days,
                    real_now=self.real.now(),
                )

            ids = await self._run(batch)
            done += len(ids)
            if progress is not None:
                progress(done, 0)
            if len(ids) < self.batch:
                return
            after = ids[-1]

    async def build_attribute(self, build: recompute.AttributeBuild) -> bool:
        """Build a claimed attribute's states for every profile and flip it."""
        after = ""
        try:
            while True:

                async def batch(tx: Tx, after: str = after) -> list[str]:
                    return await recompute.build_attribute_batch(
                        tx,
                        build,
                        after=after,
                        limit=self.batch,
                        keep_days=self.keep_days,
                        real_now=self.real.now(),
                    )

                ids = await self._run(batch)
                if len(ids) < self.batch:
                    break
                after = ids[-1]
            return await self._run(lambda tx: recompute.flip_attribute(tx, build))
        except recompute.LeaseLost:
            return False

    async def record_changes(self) -> int:
        """Record the system events of every change a flip stored without one."""
        recorded = 0
        while True:
            count = await self._run(lambda tx: recompute.record_unrecorded(tx, limit=RECORD_BATCH))
            recorded += count
            if count < RECORD_BATCH:
                return recorded

    async def drop_unused_states(self) -> int:
        """Delete the states of definitions nothing live reads any more."""
        catalog = await load_catalog(self.writer.database.read)
        rows = await self.writer.database.read("SELECT DISTINCT key FROM attribute_states")
        dead = sorted({str(r[0]) for r in rows} - set(catalog.definitions))
        dropped = 0
        for key in dead:
            while True:

                async def drop(tx: Tx, key: str = key) -> int:
                    [(generation,)] = await tx.sql.fetch(
                        "SELECT generation FROM segment_catalog WHERE id = 1"
                    )
                    if int(generation) != catalog.generation:  # a definition came back
                        return 0
                    return await tx.sql.execute(
                        "DELETE FROM attribute_states WHERE key = ? AND profile_id IN"
                        " (SELECT profile_id FROM attribute_states WHERE key = ? LIMIT ?)",
                        key,
                        key,
                        DROP_BATCH,
                    )

                count = await self._run(drop)
                dropped += count
                if count < DROP_BATCH:
                    break
        return dropped


def recompute_job(platform: Platform) -> PeriodicJob:
    """The periodic job building what waits, in the processes that run timers."""
    recomputer = Recomputer(platform.writer, keep_days=platform.settings.processed_messages_days)
    return PeriodicJob(JOB, EVERY, recomputer.run_pending, first_after=timedelta(seconds=1))
