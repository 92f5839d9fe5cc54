"""Effects that happen once although messages arrive at least once.

The bus delivers every message at least once: after a crash, a lost acknowledgement, a retry of
a batch that failed half-way, or a replayed dead letter, a consumer sees a message again. A
consumer makes that harmless by naming what makes its effect unique and asking `first_time`
in the same transaction as the effect:

    async def handle(envelopes: Sequence[Envelope]) -> None:
        async def work(tx: Tx) -> None:
            for envelope in envelopes:
                message = read_as(envelope, EventMessage)
                if await first_time(tx, consumer=NAME, key=f"welcome:{message.profile_id}"):
                    await send_welcome(tx, message.profile_id)

        await platform.writer.run(work)

`first_time` records the key in `processed_messages` and answers whether it was new: the effect
and its key commit together or not at all, so a redelivered message finds the key and does
nothing. The key is the consumer's choice: the envelope id for "once per message", or what the
effect is about ("once per person and segment"). Keys are kept `processed_messages_days` (the
periodic job `processed-messages-cleanup` deletes older ones): longer than any message can wait
to be delivered again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from beacon.core.sql import chunks
from beacon.platform import Platform
from beacon.storage.transaction import Tx
from beacon.workers.registry import PeriodicJob, Registry

MAX_KEY_LENGTH = 255  # the column's width; longer keys are kept as their digest
CLEANUP_BATCH = 5000
CLEANUP_EVERY = timedelta(hours=1)

INSERT_KEY = (
    "INSERT INTO processed_messages (consumer, key, processed_at) VALUES (?, ?, ?)"
    " ON CONFLICT (consumer, key) DO NOTHING"
)
DELETE_OLD_KEYS = """
DELETE FROM processed_messages WHERE (consumer, key) IN (
    SELECT consumer, key FROM processed_messages WHERE processed_at < ?
    ORDER BY processed_at LIMIT ?
)
"""


def _stored(key: str) -> str:
    if len(key) > MAX_KEY_LENGTH:
        return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


async def first_time(tx: Tx, *, consumer: str, key: str) -> bool:
    """Record that `consumer` has had the effect named `key`; False if it had it before."""
    return await tx.sql.execute(INSERT_KEY, consumer, _stored(key), tx.now) == 1


async def first_times(tx: Tx, *, consumer: str, keys: Sequence[str]) -> set[str]:
    """`first_time` for many keys at once (a statement per 500): return those that were new."""
    stored = {_stored(key): key for key in keys}
    new: set[str] = set()
    for chunk in chunks(stored):
        rows = await tx.sql.fetch(
            "INSERT INTO processed_messages (consumer, key, processed_at) VALUES "
            + ", ".join(["(?, ?, ?)"] * len(chunk))
            + " ON CONFLICT (consumer, key) DO NOTHING RETURNING key",
            *[value for key in chunk for value in (consumer, key, tx.now)],
        )
        new.update(stored[str(row[0])] for row in rows)
    return new


async def remember(tx: Tx, *, consumer: str, keys: Sequence[str]) -> None:
    """Record the keys (as `first_times` does) without asking which were new: cheaper, for a
    consumer whose effect does not depend on the answer (the segments consumer, with nothing
    defined, only keeps which events it has seen)."""
    now = tx.now
    await tx.sql.executemany(INSERT_KEY, [(consumer, _stored(key), now) for key in keys])


async def forget_old_keys(tx: Tx, *, before: datetime, limit: int = CLEANUP_BATCH) -> int:
    """Delete up to `limit` keys recorded before `before`, oldest first; return how many."""
    return await tx.sql.execute(DELETE_OLD_KEYS, before, limit)


def register(registry: Registry, platform: Platform) -> None:
    """Delete keys older than `processed_messages_days`, hourly, a batch per transaction."""
    keep = timedelta(days=platform.settings.processed_messages_days)

    async def cleanup() -> int:
        before = platform.clock.now() - keep
        deleted = 0
        while True:
            count = await platform.writer.run(lambda tx: forget_old_keys(tx, before=before))
            deleted += count
            if count < CLEANUP_BATCH:
                return deleted

    registry.periodic(PeriodicJob("processed-messages-cleanup", CLEANUP_EVERY, cleanup))
