"""Group commit: concurrent requests share one transaction, with no timer in the way.

A batch is whatever was submitted while the previous flush ran, so an idle server commits each
request at once and a busy one commits hundreds together. The caller awaits its own result,
which is set only after the transaction committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import structlog

J = TypeVar("J")

log = structlog.get_logger()

Flush = Callable[[Sequence[J]], Awaitable[list[Any]]]


class CommitterStopped(RuntimeError):
    """The committer is stopping and takes no more work."""


class CommitFailed(RuntimeError):
    """The transaction holding this job did not commit; nothing of it was stored."""


class GroupCommitter(Generic[J]):
    def __init__(
        self,
        flush: Flush[J],
        *,
        max_batch: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
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
        try:
            results = await self._flush([job for job, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                log.exception("commit_failed", batch_size=1)
                _settle(batch[0][1], CommitFailed(f"{type(exc).__name__}: {exc}"))
                return
            # One bad job must not fail its neighbours: commit each on its own.
            log.warning(
                "commit_batch_failed_retrying_singly", batch_size=len(batch), error=str(exc)
            )
            for item in batch:
                await self._commit([item])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _settle(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
