"""`first_times`: many idempotency keys recorded in one statement, agreeing with `first_time`;
`remember` records keys without asking which were new."""

from __future__ import annotations

from fastapi import FastAPI

from beacon.storage.writer import Writer
from beacon.workers.idempotency import first_time, first_times, remember


async def test_first_times_answers_which_keys_are_new(app: FastAPI) -> None:
    writer: Writer = app.state.writer
    long = "k" * 300  # kept as its digest, answered as given

    async def new(*keys: str, consumer: str = "c") -> set[str]:
        return await writer.run(lambda tx: first_times(tx, consumer=consumer, keys=list(keys)))

    assert await new("a", "b", "a") == {"a", "b"}
    assert await new("b", "c", long) == {"c", long}
    assert await new(long, "a") == set()
    assert await new("a", consumer="other") == {"a"}
    assert await writer.run(lambda tx: first_time(tx, consumer="c", key=long)) is False
    assert await writer.run(lambda tx: first_time(tx, consumer="c", key="d")) is True
    assert await new(*(f"many-{n}" for n in range(1200))) == {f"many-{n}" for n in range(1200)}


async def test_remembered_keys_are_known_to_first_times(app: FastAPI) -> None:
    writer: Writer = app.state.writer
    long = "r" * 300

    await writer.run(lambda tx: remember(tx, consumer="c", keys=["r1", long, "r1"]))
    await writer.run(lambda tx: remember(tx, consumer="c", keys=["r1"]))  # again: no error

    found = await writer.run(lambda tx: first_times(tx, consumer="c", keys=["r1", long, "r2"]))
    assert found == {"r2"}
    assert await writer.run(lambda tx: first_time(tx, consumer="other", key="r1")) is True
