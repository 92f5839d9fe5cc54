"""Group commit: concurrent requests share one transaction, with no timer in the way.

A batch is whatever was submitted while the previous flush ran, so an idle server commits each
request at once and a busy one commits hundreds together. The caller awaits its own result,
which is set only after the transaction committed.

One job's bad data must not fail or slow down the others. When a batch fails for a reason the
store does not call transient (`is_transient`: the database unreachable, locked or in a
deadlock), it is split in halves and each half committed on its own, down to the job that
fails alone: the others commit in a few transactions (about 2·log2(n) for one bad job in n),
not one each, and the job is refused (`JobRefused`: retrying it would fail the same way).
A job is blamed only while the store is known to work (something committed since the store
last failed for its own sake); otherwise it gets `CommitFailed`, to be retried. A transient
failure fails the whole batch at once (after one more try), since its neighbours would fail
the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import structlog

J = TypeVar("J")

log = structlog.get_logger()
TRANSIENT_RETRY_DELAY = 0.05  # seconds: a lock or deadlock has usually cleared by then

Flush = Callable[[Sequence[J]], Awaitable[list[Any]]]


class CommitterStopped(RuntimeError):
    """The committer is stopping and takes no more work."""


class CommitFailed(RuntimeError):
    """The transaction holding this job did not commit; nothing of it was stored."""


class JobRefused(RuntimeError):
    """This job fails to commit even alone while its neighbours commit: its data cannot be
    stored, and retrying it would fail the same way."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


def never_transient(exc: Exception) -> bool:
    return False


class GroupCommitter(Generic[J]):
    def __init__(
        self,
        flush: Flush[J],
        *,
        max_batch: int,
        on_batch: Callable[[int], None] | None = None,
        is_transient: Callable[[Exception], bool] = never_transient,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._is_transient = is_transient
        # Whether the store has committed since it last failed for its own sake: a job failing
        # alone is then refused for its data, else failed for the store's (and retried).
        self._store_works = False
        self._on_batch = on_batch
        self._pending: list[tuple[J, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-committer")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def submit(self, job: J) -> Any:
        """Queue `job` and return its result once its transaction has committed."""
        if self._stopping:
            raise CommitterStopped("the server is shutting down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((job, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._commit(batch)
                # Let the requests that arrived during the flush reach `submit` before the next one.
                await asyncio.sleep(0)
            if self._stopping:
                return

    async def _commit(self, batch: list[tuple[J, asyncio.Future[Any]]]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        committed, failed = await self._commit_or_split(batch)
        if committed:
            self._store_works = True
        for future, exc in failed:
            if self._store_works:  # the store commits others: this job's data is what fails
                log.error("commit_refused_job", error=str(exc), exc_info=exc)
                _settle(future, JobRefused(exc))
            else:
                log.error("commit_failed", batch_size=len(batch), error=str(exc), exc_info=exc)
                _settle(future, CommitFailed(f"{type(exc).__name__}: {exc}"))

    async def _commit_or_split(
        self, batch: list[tuple[J, asyncio.Future[Any]]]
    ) -> tuple[int, list[tuple[asyncio.Future[Any], Exception]]]:
        """Commit `batch`, or its halves if it fails; return how many jobs committed and the
        jobs that failed alone, with their errors."""
        try:
            results = await self._flush_once_more_if_transient(batch)
        except Exception as exc:
            if self._is_transient(exc):
                log.warning("commit_failed", batch_size=len(batch), error=str(exc))
                self._store_works = False
                for _, future in batch:
                    _settle(future, CommitFailed(f"{type(exc).__name__}: {exc}"))
                return 0, []
            if len(batch) == 1:
                return 0, [(batch[0][1], exc)]
            log.warning("commit_batch_split", batch_size=len(batch), error=str(exc))
            half = len(batch) // 2
            left, left_failed = await self._commit_or_split(batch[:half])
            right, right_failed = await self._commit_or_split(batch[half:])
            return left + right, left_failed + right_failed
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        return len(batch), []

    async def _flush_once_more_if_transient(
        self, batch: list[tuple[J, asyncio.Future[Any]]]
    ) -> list[Any]:
        jobs = [job for job, _ in batch]
        try:
            return await self._flush(jobs)
        except Exception as exc:
            if not self._is_transient(exc):
                raise
            log.warning("commit_retrying", batch_size=len(batch), error=str(exc))
        await asyncio.sleep(TRANSIENT_RETRY_DELAY)
        return await self._flush(jobs)


def _settle(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
