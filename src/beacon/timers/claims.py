"""Claiming due timers a batch at a time, and the gate that fires each exactly once.

A process claims the oldest due timers of the kinds it handles by marking them `claimed_by`
itself until `claimed_until`, a lease: in one `UPDATE … RETURNING` on SQLite (one writer per
file), and on PostgreSQL over a `SELECT … FOR UPDATE SKIP LOCKED`, so processes claiming at
once take different rows and never wait for each other. A claim whose process died is taken
over by another once its lease has lapsed.

Firing goes through `take_claimed`: it deletes the rows still claimed by this process and
returns them, and their handler runs in that same transaction. Each timer's effect therefore
commits exactly once, with its row's deletion; a claim that lapsed and was taken over (or a
timer rescheduled or cancelled meanwhile) is not this process's any more, and the delete finds
nothing to fire.

A timer whose handler failed stays: `attempts` + 1, the error kept, and hidden from claims for
a backoff (`TimerBackoff`). It is retried for as long as it fails, never dropped.

Leases and backoffs are operational and measured on real time (`claimed_until` holds a real
time: the hosts' clocks must agree to well within a lease), never on the business clock, which
a test may hold still or move by days. `run_at` is business time.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from beacon.core.sql import chunks, in_list
from beacon.storage.transaction import Tx
from beacon.timers.store import Fetch, Timer, stored_time, timer_of

COLUMNS = "key, kind, run_at, payload, attempts"
PLAN_INDEX_ORDER = "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off"
PLAN_AS_USUAL = "SET LOCAL enable_seqscan = on; SET LOCAL enable_bitmapscan = on"
MAX_ERROR_CHARS = 2000


def claimer_name() -> str:
    """This process's name in `claimed_by`: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class TimerBackoff:
    """How long a timer whose handler failed is left before it is tried again.

    After its n-th failure: `min(cap, base * 2 ** (n - 1))`, by default 1 s, 2 s, 4 s, … up to
    an hour, for as long as it fails.
    """

    base: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(hours=1)

    def delay(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failure."""
        doublings = max(0, attempts - 1)
        if doublings >= 40:  # far past any cap, and 2**n of a timedelta would overflow
            return self.cap
        delay: timedelta = self.base * 2**doublings
        return min(self.cap, delay)


async def claim_due(
    tx: Tx,
    *,
    now: datetime,
    kinds: Sequence[str],
    claimer: str,
    real_now: datetime,
    lease: timedelta,
    limit: int,
) -> list[Timer]:
    """Claim up to `limit` timers of `kinds` due at `now`, oldest first, for `lease` of real
    time; return them oldest first."""
    if not kinds:
        return []
    if tx.dialect == "postgresql":
        # Walk the (run_at, key) index in order and stop after `limit`. The statistics seldom
        # know how many timers are due (in a catch-up, all of them): believing it few, the
        # planner would rather bitmap-scan and sort every due row on each claim, which over a
        # backlog of n timers costs n²/limit. The settings hold until the end of the statement
        # pair: the transaction may be shared with other work.
        await tx.sql.execute(PLAN_INDEX_ORDER)
        rows = await tx.sql.fetch(
            "WITH due AS ("
            " SELECT key FROM timers"
            " WHERE run_at <= ? AND kind = ANY(?)"
            " AND (claimed_until IS NULL OR claimed_until <= ?)"
            " ORDER BY run_at, key LIMIT ?"
            " FOR UPDATE SKIP LOCKED)"
            " UPDATE timers AS t SET claimed_by = ?, claimed_until = ?"
            " FROM due WHERE t.key = due.key"
            " RETURNING t.key, t.kind, t.run_at, t.payload, t.attempts",
            now,
            list(kinds),
            real_now,
            limit,
            claimer,
            real_now + lease,
        )
        await tx.sql.execute(PLAN_AS_USUAL)
    else:
        rows = await tx.sql.fetch(
            "UPDATE timers SET claimed_by = ?, claimed_until = ?"
            " WHERE key IN (SELECT key FROM timers"
            f" WHERE run_at <= ? AND kind IN ({in_list(len(kinds))})"
            " AND (claimed_until IS NULL OR claimed_until <= ?)"
            f" ORDER BY run_at, key LIMIT ?) RETURNING {COLUMNS}",
            claimer,
            real_now + lease,
            now,
            *kinds,
            real_now,
            limit,
        )
    return sorted((timer_of(row) for row in rows), key=lambda t: (t.run_at, t.key))


async def take_claimed(tx: Tx, *, keys: Sequence[str], claimer: str) -> list[Timer]:
    """Delete the timers of `keys` still claimed by `claimer` and return them, oldest first:
    the caller fires them in this transaction (the gate that makes each fire once)."""
    rows: list[tuple[Any, ...]] = []
    if tx.dialect == "postgresql":
        rows = await tx.sql.fetch(
            f"DELETE FROM timers WHERE key = ANY(?) AND claimed_by = ? RETURNING {COLUMNS}",
            list(keys),
            claimer,
        )
    else:
        for batch in chunks(keys):
            rows += await tx.sql.fetch(
                f"DELETE FROM timers WHERE key IN ({in_list(len(batch))}) AND claimed_by = ?"
                f" RETURNING {COLUMNS}",
                *batch,
                claimer,
            )
    return sorted((timer_of(row) for row in rows), key=lambda t: (t.run_at, t.key))


async def record_failures(
    tx: Tx,
    *,
    failures: Iterable[tuple[Timer, str]],
    claimer: str,
    real_now: datetime,
    backoff: TimerBackoff,
) -> None:
    """Keep each failed timer with its error, one more attempt, and hidden for its backoff."""
    rows = []
    for timer, error in failures:
        retry_at = real_now + backoff.delay(timer.attempts + 1)
        rows.append((error[:MAX_ERROR_CHARS], retry_at, timer.key, claimer))
    await tx.sql.executemany(
        "UPDATE timers SET attempts = attempts + 1, last_error = ?, claimed_by = NULL,"
        " claimed_until = ? WHERE key = ? AND claimed_by = ?",
        rows,
    )


async def release(tx: Tx, *, keys: Sequence[str], claimer: str) -> None:
    """Give up `claimer`'s claims on `keys` (stopping): another process may take them at once."""
    for batch in chunks(keys):
        await tx.sql.execute(
            "UPDATE timers SET claimed_by = NULL, claimed_until = NULL"
            f" WHERE key IN ({in_list(len(batch))}) AND claimed_by = ?",
            *batch,
            claimer,
        )


async def renew(tx: Tx, *, key: str, claimer: str, until: datetime) -> bool:
    """Extend `claimer`'s claim on `key` to `until`; return whether it still held it."""
    return (
        await tx.sql.execute(
            "UPDATE timers SET claimed_until = ? WHERE key = ? AND claimed_by = ?",
            until,
            key,
            claimer,
        )
        > 0
    )


async def finish_run(
    tx: Tx, *, key: str, claimer: str, next_run_at: datetime, error: str | None
) -> bool:
    """Release a timer that ran outside its firing transaction (a periodic job) and schedule it
    again at `next_run_at`, counting a failure if `error`; return whether `claimer` held it."""
    return (
        await tx.sql.execute(
            "UPDATE timers SET run_at = ?, claimed_by = NULL, claimed_until = NULL,"
            " attempts = CASE WHEN ? THEN attempts + 1 ELSE 0 END, last_error = ?"
            " WHERE key = ? AND claimed_by = ?",
            next_run_at,
            error is not None,
            None if error is None else error[:MAX_ERROR_CHARS],
            key,
            claimer,
        )
        > 0
    )


async def next_run_at(fetch: Fetch, *, after: datetime) -> datetime | None:
    """The earliest `run_at` later than `after`, or None."""
    rows = await fetch("SELECT min(run_at) FROM timers WHERE run_at > ?", after)
    return None if not rows or rows[0][0] is None else stored_time(rows[0][0])


@dataclass(frozen=True, slots=True)
class TimerCounts:
    pending: int
    failing: int  # pending timers whose handler failed at least once (in backoff or due)


async def count_timers(fetch: Fetch) -> TimerCounts:
    """How many timers are pending, and how many of them failed."""
    [(pending,)] = await fetch("SELECT count(*) FROM timers")
    [(failing,)] = await fetch("SELECT count(*) FROM timers WHERE attempts > 0")
    return TimerCounts(int(pending), int(failing))


@dataclass(frozen=True, slots=True)
class DueTimers:
    """The timers of some kinds due at a time, by what stands between them and firing."""

    claimable: int  # nobody holds them: the next claim takes them
    in_flight: int  # claimed by a process whose lease runs
    backing_off: int  # failed, waiting for their backoff

    @property
    def total(self) -> int:
        return self.claimable + self.in_flight + self.backing_off


async def due_timers(
    fetch: Fetch, *, until: datetime, kinds: Sequence[str], real_now: datetime
) -> DueTimers:
    """Count the timers of `kinds` due at `until`."""
    if not kinds:
        return DueTimers(0, 0, 0)
    [row] = await fetch(
        "SELECT"
        " count(CASE WHEN claimed_until IS NULL OR claimed_until <= ? THEN 1 END),"
        " count(CASE WHEN claimed_until > ? AND claimed_by IS NOT NULL THEN 1 END),"
        " count(CASE WHEN claimed_until > ? AND claimed_by IS NULL THEN 1 END)"
        f" FROM timers WHERE run_at <= ? AND kind IN ({in_list(len(kinds))})",
        real_now,
        real_now,
        real_now,
        until,
        *kinds,
    )
    return DueTimers(int(row[0]), int(row[1]), int(row[2]))


async def failing_timers(
    fetch: Fetch, *, limit: int
) -> list[tuple[Timer, str | None, datetime | None]]:
    """The failing timers (their last error and when they are tried again), oldest first."""
    rows = await fetch(
        f"SELECT {COLUMNS}, last_error, claimed_until FROM timers WHERE attempts > 0"
        " ORDER BY run_at, key LIMIT ?",
        limit,
    )
    return [
        (
            timer_of(row[:5]),
            None if row[5] is None else str(row[5]),
            None if row[6] is None else stored_time(row[6]),
        )
        for row in rows
    ]
