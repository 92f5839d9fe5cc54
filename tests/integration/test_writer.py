"""The one write path: any domain's work shares group-committed transactions, publishes through
the outbox only what commits, and one job's refusal undoes only that job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest

from beacon.bus.messages import Envelope, OutboxBatch
from beacon.core.clock import FrozenClock
from beacon.runtime import create_writer
from beacon.storage.transaction import Tx
from beacon.storage.writer import Writer
from tests.conftest import make_settings

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Refused(Exception):
    """A domain's own refusal, raised inside its work."""


@pytest.fixture
async def writer(database_url: str) -> AsyncIterator[Writer]:
    writer, _ = create_writer(make_settings(database_url), FrozenClock(T0))
    await writer.database.start()
    writer.start()
    try:
        yield writer
    finally:
        await writer.stop()
        await writer.database.close()


def add_source(source_id: str, *, refuse: bool = False) -> Callable[[Tx], Awaitable[str]]:
    async def work(tx: Tx) -> str:
        await tx.sql.execute(
            "INSERT INTO sources (id, name, write_key, enabled, consent_required,"
            " allowed_origins, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            source_id,
            source_id,
            f"key-{source_id}",
            True,
            False,
            "[]",
            tx.now,
            tx.now,
        )
        tx.enqueue([Envelope(f"m-{source_id}", "events", source_id, {"source": source_id})])
        if refuse:
            raise Refused(f"{source_id} refused after writing")
        return source_id

    return work


async def source_ids(writer: Writer) -> list[str]:
    rows = await writer.database.read("SELECT id FROM sources ORDER BY id")
    return [str(row[0]) for row in rows]


async def outbox(writer: Writer) -> list[OutboxBatch]:
    return await writer.database.stale_outbox(datetime(2100, 1, 1, tzinfo=UTC), 10_000)


async def test_concurrent_work_shares_transactions_and_each_gets_its_result(
    writer: Writer,
) -> None:
    names = [f"s{n:02d}" for n in range(30)]

    results = await asyncio.gather(*(writer.run(add_source(name)) for name in names))

    assert results == names
    assert await source_ids(writer) == names
    rows = await outbox(writer)
    assert len(rows) < len(names), "concurrent work should have shared transactions"
    assert sorted(e.id for row in rows for e in row.envelopes) == [f"m-{n}" for n in names]


async def test_a_refused_job_undoes_only_its_own_writes_and_messages(writer: Writer) -> None:
    jobs = [add_source("a"), add_source("b", refuse=True), add_source("c")]

    outcomes = await asyncio.gather(
        *(writer.run(job) for job in jobs),
        return_exceptions=True,
    )

    assert outcomes[0] == "a" and outcomes[2] == "c"
    assert isinstance(outcomes[1], Refused)
    assert await source_ids(writer) == ["a", "c"]
    published = sorted(e.id for row in await outbox(writer) for e in row.envelopes)
    assert published == ["m-a", "m-c"]


async def test_what_is_enqueued_is_handed_on_only_after_commit(writer: Writer) -> None:
    handed: list[OutboxBatch] = []
    writer.database.on_committed = handed.append

    await writer.run(add_source("kept"))
    with pytest.raises(Refused):
        await writer.run(add_source("dropped", refuse=True))

    assert [e.id for row in handed for e in row.envelopes] == ["m-kept"]
    assert [e.id for row in await outbox(writer) for e in row.envelopes] == ["m-kept"]
