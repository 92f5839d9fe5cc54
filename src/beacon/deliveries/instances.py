"""Message instances: one per delivery request, with its status, its timeline and its attempts.

    queued ─► sending ─► sent (─► bounced)
                 │  ├──► failed      a permanent failure, or a render that failed
                 │  └──► retrying ─► sending ...   until the retry policy gives up: dead
    queued ─► skipped   nothing sent: suppressed, no consent, no recipient

An attempt is claimed before anything is sent (`claim_attempt`: compare-and-set on the status
and attempt count seen, marking who sends and until when) and recorded after (`finish`, only
by the process that claimed it): so one instance is never sent by two processes at once, and a
claim whose process died is seen as such and taken over (`interrupted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from beacon.core import jsonio
from beacon.core.sql import Sql
from beacon.deliveries.library import MessageInfo
from beacon.deliveries.retry import RetryPolicy
from beacon.deliveries.templates import ChannelKind
from beacon.identity.actions import db_json, db_time
from beacon.storage.transaction import Tx

STATUSES = ("queued", "sending", "retrying", "sent", "failed", "dead", "skipped", "bounced")
FINAL = frozenset({"sent", "failed", "dead", "skipped", "bounced"})
ATTEMPTABLE = frozenset({"queued", "retrying"})

SELECT_INSTANCE = (
    "SELECT i.id, i.delivery_id, i.message_id, m.tag, m.transactional, i.profile_id,"
    " i.contact_id, i.kind, i.channel, i.recipient, i.status, i.attempts, i.retry_policy,"
    " i.content, i.sending_by, i.sending_until"
    " FROM message_instances i JOIN messages m ON m.id = i.message_id"
)


@dataclass(frozen=True, slots=True)
class Instance:
    """A message instance as the delivery worker and the tracking endpoints see it."""

    id: int
    delivery_id: str
    message_id: int
    tag: str | None
    transactional: bool
    profile_id: str
    contact_id: int | None
    kind: ChannelKind
    channel: str
    recipient: str | None
    status: str
    attempts: int
    policy: RetryPolicy
    content: dict[str, Any] | None
    sending_by: str | None
    sending_until: datetime | None


def _instance(row: tuple[Any, ...]) -> Instance:
    content = db_json(row[13])
    return Instance(
        id=int(row[0]),
        delivery_id=str(row[1]),
        message_id=int(row[2]),
        tag=row[3],
        transactional=bool(row[4]),
        profile_id=str(row[5]),
        contact_id=None if row[6] is None else int(row[6]),
        kind=cast("ChannelKind", str(row[7])),
        channel=str(row[8]),
        recipient=row[9],
        status=str(row[10]),
        attempts=int(row[11]),
        policy=RetryPolicy.from_json(db_json(row[12])),
        content=content if isinstance(content, dict) else None,
        sending_by=row[14],
        sending_until=db_time(row[15]),
    )


async def load_instance(sql: Sql, delivery_id: str) -> Instance | None:
    """Return the instance of the delivery `delivery_id`, or None."""
    rows = await sql.fetch(SELECT_INSTANCE + " WHERE i.delivery_id = ?", delivery_id)
    return _instance(rows[0]) if rows else None


async def create_instance(
    tx: Tx,
    *,
    delivery_id: str,
    message: MessageInfo,
    profile_id: str,
    kind: ChannelKind,
    channel: str,
    policy: RetryPolicy,
) -> Instance:
    """Return the delivery's instance, creating it (queued) if it is new."""
    created = await tx.sql.fetch(
        "INSERT INTO message_instances (delivery_id, message_id, profile_id, kind, channel,"
        " status, attempts, retry_policy, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?)"
        " ON CONFLICT (delivery_id) DO NOTHING RETURNING id",
        delivery_id,
        message.id,
        profile_id,
        kind,
        channel,
        jsonio.dumps_text(policy.to_json()),
        tx.now,
        tx.now,
    )
    if created:
        await add_timeline(tx, int(created[0][0]), "queued", detail=f"via {channel}")
    found = await load_instance(tx.sql, delivery_id)
    assert found is not None
    return found


async def claim_attempt(
    tx: Tx,
    instance: Instance,
    *,
    by: str,
    until: datetime,
    recipient: str | None,
    contact_id: int,
    content: dict[str, Any],
) -> Instance | None:
    """Mark the next attempt as being sent by `by` until `until` (real time), if the instance
    is still as `instance` saw it; return it as claimed, or None if something changed."""
    changed = await tx.sql.execute(
        "UPDATE message_instances SET status = 'sending', attempts = attempts + 1,"
        " sending_by = ?, sending_until = ?, recipient = ?, contact_id = ?, content = ?,"
        " next_attempt_at = NULL, updated_at = ?"
        " WHERE id = ? AND status = ? AND attempts = ?",
        by,
        until,
        recipient,
        contact_id,
        jsonio.dumps_text(content),
        tx.now,
        instance.id,
        instance.status,
        instance.attempts,
    )
    if not changed:
        return None
    if instance.status == "sending":
        await add_timeline(
            tx,
            instance.id,
            "interrupted",
            attempt=instance.attempts,
            detail=f"{instance.sending_by} stopped while sending; the attempt is made again",
        )
    return await load_instance(tx.sql, instance.delivery_id)


async def finish(
    tx: Tx,
    instance: Instance,
    *,
    status: str,
    reason: str | None,
    provider_id: str | None = None,
    next_attempt_at: datetime | None = None,
) -> bool:
    """Record how the claimed attempt ended; False if the claim was taken over meanwhile."""
    assert status in STATUSES, status
    changed = await tx.sql.execute(
        "UPDATE message_instances SET status = ?, status_reason = ?,"
        " provider_id = COALESCE(?, provider_id), next_attempt_at = ?, sending_by = NULL,"
        " sending_until = NULL, updated_at = ?"
        " WHERE id = ? AND status = 'sending' AND attempts = ? AND sending_by = ?",
        status,
        reason,
        provider_id,
        next_attempt_at,
        tx.now,
        instance.id,
        instance.attempts,
        instance.sending_by,
    )
    return changed > 0


async def settle(tx: Tx, instance: Instance, *, status: str, reason: str) -> bool:
    """End an instance that is not being sent (skipped, or failed before sending); its
    recipient and contact id are kept as `instance` has them."""
    changed = await tx.sql.execute(
        "UPDATE message_instances SET status = ?, status_reason = ?, sending_by = NULL,"
        " sending_until = NULL, recipient = COALESCE(?, recipient),"
        " contact_id = COALESCE(?, contact_id), updated_at = ?"
        " WHERE id = ? AND status = ? AND attempts = ?",
        status,
        reason,
        instance.recipient,
        instance.contact_id,
        tx.now,
        instance.id,
        instance.status,
        instance.attempts,
    )
    if changed:
        await add_timeline(tx, instance.id, status, detail=reason)
    return changed > 0


async def mark_once(tx: Tx, instance_id: int, column: str) -> bool:
    """Set `read_at` or `unsubscribed_at` if unset; whether this call set it."""
    assert column in ("read_at", "unsubscribed_at"), column
    changed = await tx.sql.execute(
        f"UPDATE message_instances SET {column} = ? WHERE id = ? AND {column} IS NULL",
        tx.now,
        instance_id,
    )
    return changed > 0


async def set_status(tx: Tx, instance_id: int, *, status: str, reason: str, when: str) -> None:
    """Move a sent instance to `status` (a permanent bounce): only from status `when`."""
    await tx.sql.execute(
        "UPDATE message_instances SET status = ?, status_reason = ?, updated_at = ?"
        " WHERE id = ? AND status = ?",
        status,
        reason,
        tx.now,
        instance_id,
        when,
    )


async def add_timeline(
    tx: Tx,
    instance_id: int,
    status: str,
    *,
    attempt: int | None = None,
    detail: str | None = None,
    latency_ms: float | None = None,
) -> None:
    """Add a step to the instance's timeline."""
    await tx.sql.execute(
        "INSERT INTO message_timeline (instance_id, at, status, attempt, detail, latency_ms)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        instance_id,
        tx.now,
        status,
        attempt,
        detail,
        latency_ms,
    )
