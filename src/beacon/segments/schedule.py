"""Each profile's one durable timer: when time alone next changes one of its memberships.

The timer `segments:profile:{id}` (kind `segments.reevaluate`) is due at the earliest moment a
time-relative rule ("no visit for 30 days", "within the last 7 days") flips for the profile;
when it fires, the profile alone is evaluated again and the timer set to its next moment. No
scan of all profiles ever looks for these moments.

Evaluating only some segments (those an event touched) can only bring the timer earlier
(`lower`): an early timer finds nothing changed and moves itself to the exact next moment.

On PostgreSQL a timer row being fired is locked by the transaction firing it, which then waits
for the profile's lock that our transaction holds: so rows locked by others are left alone
(`FOR UPDATE SKIP LOCKED`), their firing sets them right once it has the profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from beacon.core.sql import chunks, in_list
from beacon.storage.database import utc
from beacon.storage.transaction import Tx
from beacon.timers import store

KIND = "segments.reevaluate"
PREFIX = "segments:profile:"


def timer_key(profile_id: str) -> str:
    return PREFIX + profile_id


def profile_of(key: str) -> str:
    return key.removeprefix(PREFIX)


async def _pending(tx: Tx, keys: list[str]) -> tuple[dict[str, datetime], set[str]]:
    """The pending timers among `keys` (key → run_at), and those another transaction holds."""
    pending: dict[str, datetime] = {}
    held: set[str] = set()
    for batch in chunks(keys):
        marks = in_list(len(batch))
        rows = await tx.sql.fetch(f"SELECT key, run_at FROM timers WHERE key IN ({marks})", *batch)
        pending.update((str(key), utc(run_at)) for key, run_at in rows)
        if tx.dialect == "postgresql" and rows:
            mine = await tx.sql.fetch(
                f"SELECT key FROM timers WHERE key IN ({marks}) FOR UPDATE SKIP LOCKED", *batch
            )
            held |= {str(key) for key, _ in rows} - {str(row[0]) for row in mine}
    return pending, held


async def lower(tx: Tx, moments: Mapping[str, datetime]) -> None:
    """Make each profile's timer due no later than its moment (profile id → moment)."""
    keys = {timer_key(p): at for p, at in moments.items()}
    pending, held = await _pending(tx, sorted(keys))
    new = []
    for key, at in keys.items():
        if key in held:
            continue
        if key not in pending:
            new.append(store.Timer(key, KIND, at))
        elif at < pending[key]:
            await store.reschedule(tx, key=key, run_at=at)
    await store.schedule_many(tx, new)


async def set_exactly(tx: Tx, moments: Mapping[str, datetime | None]) -> None:
    """Make each profile's timer due exactly at its moment (None: no timer)."""
    keys = {timer_key(p): at for p, at in moments.items()}
    pending, held = await _pending(tx, sorted(keys))
    new = []
    for key, at in keys.items():
        if key in held:
            continue
        if at is None:
            if key in pending:
                await store.cancel(tx, key=key)
        elif key not in pending:
            new.append(store.Timer(key, KIND, at))
        elif pending[key] != at:
            await store.reschedule(tx, key=key, run_at=at)
    await store.schedule_many(tx, new)


async def cancel(tx: Tx, profile_ids: list[str]) -> None:
    """Delete the profiles' timers."""
    for profile_id in profile_ids:
        await store.cancel(tx, key=timer_key(profile_id))
