"""Group commit: concurrent submissions share flushes, results reach their own callers."""

import asyncio
from collections.abc import Sequence

import pytest

from beacon.ingest.commit import CommitFailed, CommitterStopped, GroupCommitter


async def test_concurrent_jobs_share_flushes_and_get_their_own_results() -> None:
    batches: list[list[int]] = []

    async def flush(jobs: Sequence[int]) -> list[int]:
        batches.append(list(jobs))
        await asyncio.sleep(0.01)  # a transaction takes time; more jobs queue meanwhile
        return [job * 10 for job in jobs]

    committer: GroupCommitter[int] = GroupCommitter(flush, max_batch=1000)
    committer.start()
    results = await asyncio.gather(*(committer.submit(i) for i in range(200)))
    await committer.stop()
    assert results == [i * 10 for i in range(200)]
    assert sorted(j for batch in batches for j in batch) == list(range(200))
    assert len(batches) < 20, "concurrent jobs should have shared transactions"


async def test_batches_respect_the_maximum() -> None:
    sizes: list[int] = []

    async def flush(jobs: Sequence[int]) -> list[None]:
        sizes.append(len(jobs))
        return [None] * len(jobs)

    committer: GroupCommitter[int] = GroupCommitter(flush, max_batch=7)
    committer.start()
    await asyncio.gather(*(committer.submit(i) for i in range(50)))
    await committer.stop()
    assert max(sizes) <= 7
    assert sum(sizes) == 50


async def test_one_bad_job_does_not_fail_its_neighbours() -> None:
    async def flush(jobs: Sequence[int]) -> list[int]:
        if 13 in jobs:
            raise ValueError("job 13 violates a constraint")
        return list(jobs)

    committer: GroupCommitter[int] = GroupCommitter(flush, max_batch=100)
    committer.start()
    outcomes = await asyncio.gather(
        *(committer.submit(i) for i in range(20)), return_exceptions=True
    )
    await committer.stop()
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
    assert failed == [13]
    assert isinstance(outcomes[13], CommitFailed)
    assert [o for i, o in enumerate(outcomes) if i != 13] == [i for i in range(20) if i != 13]


async def test_stopping_commits_queued_work_and_refuses_new_work() -> None:
    committed: list[int] = []

    async def flush(jobs: Sequence[int]) -> list[None]:
        committed.extend(jobs)
        return [None] * len(jobs)

    committer: GroupCommitter[int] = GroupCommitter(flush, max_batch=10)
    committer.start()
    pending = [asyncio.create_task(committer.submit(i)) for i in range(5)]
    await asyncio.sleep(0)
    await committer.stop()
    await asyncio.gather(*pending)
    assert sorted(committed) == [0, 1, 2, 3, 4]
    with pytest.raises(CommitterStopped):
        await committer.submit(99)
