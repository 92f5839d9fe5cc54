"""Group commit: concurrent submissions share flushes, results reach their own callers."""

import asyncio
from collections.abc import Sequence

import pytest

from beacon.storage.commit import CommitFailed, CommitterStopped, GroupCommitter, JobRefused


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
    assert isinstance(outcomes[13], JobRefused)
    assert "job 13 violates a constraint" in str(outcomes[13])
    assert [o for i, o in enumerate(outcomes) if i != 13] == [i for i in range(20) if i != 13]


async def test_a_bad_job_is_isolated_in_a_few_transactions_not_one_per_neighbour() -> None:
    flushes: list[list[int]] = []

    async def flush(jobs: Sequence[int]) -> list[int]:
        flushes.append(list(jobs))
        if 37 in jobs:
            raise ValueError("job 37 cannot be stored")
        return list(jobs)

    committer: GroupCommitter[int] = GroupCommitter(flush, max_batch=1000)
    await _submit_all_in_one_batch(committer, 64)

    committed = sorted(j for batch in flushes[1:] if 37 not in batch for j in batch)
    assert committed == [i for i in range(64) if i != 37]
    assert len(flushes) <= 2 * 6 + 1  # halving 64 jobs down to one: 6 levels, 2 flushes each


async def test_a_batch_failing_whole_before_anything_committed_is_not_blamed_on_its_jobs() -> None:
    """Nothing ever committed (even alone): the store, not the data, may be what fails."""

    async def flush(jobs: Sequence[int]) -> list[int]:
        raise ValueError("no such table: events")

    committer: GroupCommitter[int] = GroupCommitter(flush, max_batch=1000)
    outcomes = await _submit_all_in_one_batch(committer, 4)

    assert all(isinstance(o, CommitFailed) for o in outcomes), outcomes


async def test_a_job_failing_alone_once_the_store_has_committed_is_refused() -> None:
    async def flush(jobs: Sequence[int]) -> list[int]:
        if 7 in jobs:
            raise ValueError("job 7 cannot be stored")
        return list(jobs)

    committer: GroupCommitter[int] = GroupCommitter(flush, max_batch=1000)
    committer.start()
    first = await asyncio.gather(committer.submit(7), return_exceptions=True)
    assert await committer.submit(1) == 1
    second = await asyncio.gather(committer.submit(7), return_exceptions=True)
    await committer.stop()

    assert isinstance(first[0], CommitFailed)  # nothing had committed yet: maybe the store
    assert isinstance(second[0], JobRefused)  # the store commits: job 7 is what fails


async def test_a_transient_failure_is_tried_once_more_then_fails_the_batch_without_splitting() -> (
    None
):
    flushes: list[list[int]] = []

    async def flush(jobs: Sequence[int]) -> list[int]:
        flushes.append(list(jobs))
        raise ConnectionError("the database went away")

    committer: GroupCommitter[int] = GroupCommitter(
        flush, max_batch=1000, is_transient=lambda exc: isinstance(exc, ConnectionError)
    )
    outcomes = await _submit_all_in_one_batch(committer, 8)

    assert all(isinstance(o, CommitFailed) for o in outcomes), outcomes
    assert flushes == [list(range(8))] * 2


async def test_a_transient_failure_that_clears_commits_the_batch_on_the_second_try() -> None:
    attempts: list[int] = []

    async def flush(jobs: Sequence[int]) -> list[int]:
        attempts.append(len(jobs))
        if len(attempts) == 1:
            raise ConnectionError("deadlock detected")
        return [job * 2 for job in jobs]

    committer: GroupCommitter[int] = GroupCommitter(
        flush, max_batch=1000, is_transient=lambda exc: isinstance(exc, ConnectionError)
    )
    outcomes = await _submit_all_in_one_batch(committer, 5)

    assert outcomes == [0, 2, 4, 6, 8]
    assert attempts == [5, 5]


async def _submit_all_in_one_batch(committer: GroupCommitter[int], count: int) -> list[object]:
    """Queue `count` jobs before the committer runs, so they share its first flush."""
    pending = [asyncio.ensure_future(committer.submit(i)) for i in range(count)]
    await asyncio.sleep(0)  # every submit is queued before the committer's task first runs
    committer.start()
    outcomes = await asyncio.gather(*pending, return_exceptions=True)
    await committer.stop()
    return outcomes


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
