"""`Writer`: the one write path of a process, which every domain submits its work to.

A job is a plain value of a kind some domain registered (`handle`): ingest's requests, dead
letters, a profile's last-seen times... or `Work`, any function of a `Tx`. Jobs submitted
while a transaction runs share the next one (group commit, `commit.GroupCommitter`): each kind's
handler gets all the batch's jobs of its kind at once, in the order kinds were registered
(`Work` last), and returns one result per job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from beacon.storage.commit import GroupCommitter
from beacon.storage.database import Database
from beacon.storage.partitions import month_start
from beacon.storage.transaction import Tx

T = TypeVar("T")
J = TypeVar("J")

BatchHandler = Callable[[Tx, Sequence[J]], Awaitable[Sequence[Any]]]
"""Runs a batch's jobs of one kind in the transaction; returns one result per job."""
Prepare = Callable[[Sequence[J]], Awaitable[None]]
"""Runs before the transaction opens, for what cannot be done inside it."""


@dataclass(frozen=True, slots=True)
class Work(Generic[T]):
    """Any domain's unit of work: a function of the transaction, returning its result."""

    run: Callable[[Tx], Awaitable[T]]


@dataclass(frozen=True, slots=True)
class _Kind:
    handler: BatchHandler[Any]
    prepare: Prepare[Any] | None


@dataclass(frozen=True, slots=True)
class Failed:
    """What a `Work` job that raised answers: its error, raised again to its submitter."""

    error: Exception


async def _run_work(tx: Tx, jobs: Sequence[object]) -> list[Any]:
    """Run each job in a savepoint: one that raises (a refusal of its own, such as a duplicate
    id) undoes only its own writes, and its error goes back to its submitter alone."""
    results: list[Any] = []
    for job in jobs:
        try:
            async with tx.savepoint():
                results.append(await cast("Work[Any]", job).run(tx))
        except Exception as exc:
            results.append(Failed(exc))
    return results


def unwrapped(result: Any) -> Any:
    """A job's result, or its error raised."""
    if isinstance(result, Failed):
        raise result.error
    return result


class Writer:
    """Commits jobs of registered kinds, concurrent submissions sharing transactions."""

    def __init__(
        self,
        database: Database,
        *,
        max_batch: int = 2000,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.database = database
        self._kinds: dict[type, _Kind] = {}
        self._committer: GroupCommitter[object] = GroupCommitter(
            self.commit,
            max_batch=max_batch,
            on_batch=on_batch,
            is_transient=database.is_transient,
        )

    def handle(
        self, kind: type[J], handler: BatchHandler[J], *, prepare: Prepare[J] | None = None
    ) -> None:
        """Register the batch handler of a job kind (each kind has one)."""
        if kind in self._kinds or kind is Work:
            raise ValueError(f"jobs of kind {kind.__name__} have a handler already")
        self._kinds[kind] = _Kind(handler, prepare)

    def start(self) -> None:
        self._committer.start()

    async def stop(self) -> None:
        """Commit what is queued, then take no more work."""
        await self._committer.stop()

    async def submit(self, job: object) -> Any:
        """Commit `job` with whatever else is queued; return its result once committed."""
        return unwrapped(await self._committer.submit(job))

    async def run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `work` in the write path's next transaction; return its result once committed,
        or raise what it raised (nothing it wrote is kept then)."""
        result: T = await self.submit(Work(work))
        return result

    async def run_now(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        """`run` without group commit: one transaction now (command-line writes)."""
        [result] = await self.commit([Work(work)])
        return cast("T", unwrapped(result))

    async def commit(self, jobs: Sequence[object]) -> list[Any]:
        """Commit `jobs` in one transaction now (no group commit); one result per job (a
        `Failed` for a `Work` job that raised)."""
        try:
            return await self._commit_once(jobs)
        except Exception as exc:
            if not self.database.recover(exc):
                raise
        return await self._commit_once(jobs)

    async def _commit_once(self, jobs: Sequence[object]) -> list[Any]:
        groups: dict[type, list[int]] = {}
        for index, job in enumerate(jobs):
            kind = type(job)
            if kind is not Work and kind not in self._kinds:
                raise TypeError(f"no handler is registered for jobs of kind {kind.__name__}")
            groups.setdefault(kind, []).append(index)
        order = [kind for kind in self._kinds if kind in groups]
        for kind in order:
            prepare = self._kinds[kind].prepare
            if prepare is not None:
                await prepare([jobs[i] for i in groups[kind]])
        # System events are stored at the clock's time: its month must be ready too.
        await self.database.ensure_months({month_start(self.database.clock.now())})
        results: list[Any] = [None] * len(jobs)
        async with self.database.transaction() as tx:
            for kind in [*order, *([Work] if Work in groups else [])]:
                handler: BatchHandler[Any] = (
                    _run_work if kind is Work else self._kinds[kind].handler
                )
                indices = groups[kind]
                for index, result in zip(
                    indices, await handler(tx, [jobs[i] for i in indices]), strict=True
                ):
                    results[index] = result
        return results
