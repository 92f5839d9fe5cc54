"""Attempts in flight: a send is claimed by a process until a time (real time), and a claim is
taken over only when that process is known to have stopped.

A claim is abandoned when its lease ran out, or when the process holding it has stopped
beating (`workers.heartbeats`: three missed beats), once the claim is old enough for a new
process's first beat to have been written. A claim of this very process that is not in flight
is abandoned too: the send it was for ended without a record.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from beacon.core.sql import Sql
from beacon.workers.heartbeats import LIVE_INTERVALS, is_live

SEND_LEASE = timedelta(minutes=5)  # longer than any channel's time limit for one message


def lease_until() -> datetime:
    """When a claim made now lapses."""
    return datetime.now(UTC) + SEND_LEASE


async def abandoned(
    sql: Sql,
    *,
    owner: str | None,
    until: datetime | None,
    me: str,
    in_flight: bool,
    heartbeat_seconds: float,
) -> bool | None:
    """Whether a claim may be taken over; None if it is this process's, in flight now (a
    repeated message: nothing to do)."""
    if owner == me:
        return None if in_flight else True
    now = datetime.now(UTC)
    if owner is None or until is None or now >= until:
        return True
    grace = timedelta(seconds=LIVE_INTERVALS * heartbeat_seconds)
    if now < until - SEND_LEASE + grace:
        return False
    return not await is_live(sql, owner, now=now, interval=heartbeat_seconds)
