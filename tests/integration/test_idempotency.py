"""`first_times`: many idempotency keys recorded in one statement, agreeing with `first_time`."""

from __future__ import annotations

from fastapi import FastAPI

from beacon.storage.writer import Writer
from beacon.workers.idempotency import first_time, first_times


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
