"""The `timers` table: what a domain schedules, reschedules and cancels in its own transaction.

A timer is a row: a unique `key`, a `kind` (which registered handler fires it), `run_at` and a
small JSON `payload`. `schedule`, `reschedule` and `cancel` are functions of a `Tx`, so a
domain changes its timers in the same transaction as its own writes: a rolled-back write never
leaves a timer behind.

- `schedule` is idempotent by key: while a timer with that key is pending, scheduling it again
  changes nothing, whatever the `run_at`, kind or payload given (the first one stands, and the
  call answers False). To move a pending timer, `reschedule` it. Once a timer has fired, its
  row is gone and its key may be scheduled again (periodic jobs reuse theirs).
- `reschedule` moves a pending timer to a new time and forgets its failures; a process that
  claimed it meanwhile no longer fires it (its claim is dropped), so it fires once, at the new
  time.
- `cancel` deletes a pending timer; a process that claimed it meanwhile finds nothing to fire.

`run_at` is business time, read from the deployment's `Clock` (`BEACON_CLOCK`). Claims and
backoffs (`claims.py`) are measured on real time.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from beacon.core import jsonio
from beacon.core.clock import to_utc
from beacon.storage.transaction import Tx

Fetch = Callable[..., Awaitable[list[tuple[Any, ...]]]]
"""Runs a query with `?` arguments: `tx.sql.fetch` in a transaction, `Database.read` beside."""

MAX_KEY_LENGTH = 255
MAX_KIND_LENGTH = 100
MAX_PAYLOAD_BYTES = 16 * 1024  # a timer names what to do; the data it acts on lives elsewhere


@dataclass(frozen=True, slots=True)
class Timer:
    """One timer: `key` is unique (scheduling it again changes nothing), `payload` small JSON.

    `attempts` counts the times its handler failed on it (retried after a backoff)."""

    key: str
    kind: str
    run_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0


class _Wakeable(Protocol):
    def scheduled(self, run_at: datetime) -> None: ...


# The runners of this process, told when a timer scheduled here commits so they need not wait
# for their next poll. Process-wide because a `Tx` knows no runner; another runtime of the same
# process (tests start several) hearing of it only looks once more than it needed to.
_runners: weakref.WeakSet[_Wakeable] = weakref.WeakSet()


def wake_on_schedule(runner: _Wakeable) -> None:
    """Tell `runner` of every timer scheduled in this process, once its transaction commits."""
    _runners.add(runner)


def _after_commit_wake(tx: Tx, run_at: datetime) -> None:
    def wake() -> None:
        for runner in list(_runners):
            runner.scheduled(run_at)

    tx.after_commit(wake)


def _row(timer: Timer, now: datetime) -> tuple[Any, ...]:
    if not 0 < len(timer.key) <= MAX_KEY_LENGTH:
        raise ValueError(f"a timer key has 1 to {MAX_KEY_LENGTH} characters: {timer.key!r}")
    if not 0 < len(timer.kind) <= MAX_KIND_LENGTH:
        raise ValueError(f"a timer kind has 1 to {MAX_KIND_LENGTH} characters: {timer.kind!r}")
    if timer.run_at.tzinfo is None:
        raise ValueError(f"timer {timer.key!r}: run_at must be timezone-aware")
    payload = jsonio.dumps_text(timer.payload)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"timer {timer.key!r}: payload of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}"
        )
    return (timer.key, timer.kind, timer.run_at, payload, now)


INSERT = (
    "INSERT INTO timers (key, kind, run_at, payload, attempts, created_at)"
    " VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (key) DO NOTHING"
)


async def schedule(
    tx: Tx, *, key: str, kind: str, run_at: datetime, payload: dict[str, Any] | None = None
) -> bool:
    """Schedule a timer unless one with `key` is pending; return whether this call created it."""
    row = _row(Timer(key, kind, run_at, payload or {}), tx.now)
    created = await tx.sql.execute(INSERT, *row) > 0
    if created:
        _after_commit_wake(tx, run_at)
    return created


async def schedule_many(tx: Tx, timers: Iterable[Timer]) -> None:
    """`schedule` each of `timers` (keys already pending are left as they are), in one batch."""
    rows = [_row(timer, tx.now) for timer in timers]
    if not rows:
        return
    await tx.sql.executemany(INSERT, rows)
    _after_commit_wake(tx, min(row[2] for row in rows))


async def reschedule(tx: Tx, *, key: str, run_at: datetime) -> bool:
    """Move the pending timer `key` to `run_at`, forgetting its failures and any claim on it;
    return whether it was pending."""
    if run_at.tzinfo is None:
        raise ValueError(f"timer {key!r}: run_at must be timezone-aware")
    moved = await tx.sql.execute(
        "UPDATE timers SET run_at = ?, attempts = 0, last_error = NULL, claimed_by = NULL,"
        " claimed_until = NULL WHERE key = ?",
        run_at,
        key,
    )
    if moved:
        _after_commit_wake(tx, run_at)
    return moved > 0


async def cancel(tx: Tx, *, key: str) -> bool:
    """Delete the pending timer `key`; return whether it was pending."""
    return await tx.sql.execute("DELETE FROM timers WHERE key = ?", key) > 0


async def pending_timer(fetch: Fetch, *, key: str) -> Timer | None:
    """The pending timer `key`, or None (fired, cancelled or never scheduled); `fetch` is a
    transaction's `tx.sql.fetch` or `Database.read`."""
    rows = await fetch("SELECT key, kind, run_at, payload, attempts FROM timers WHERE key = ?", key)
    return timer_of(rows[0]) if rows else None


def timer_of(row: tuple[Any, ...]) -> Timer:
    """A `Timer` from a row of (key, kind, run_at, payload, attempts), from either database."""
    key, kind, run_at, payload, attempts = row
    return Timer(
        str(key),
        str(kind),
        stored_time(run_at),
        jsonio.loads(payload) if isinstance(payload, str | bytes) else dict(payload),
        int(attempts),
    )


def stored_time(value: Any) -> datetime:
    """A time column read from either database, UTC-aware (SQLite keeps UTC text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime), value
    return to_utc(value)
