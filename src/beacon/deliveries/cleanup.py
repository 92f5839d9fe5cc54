"""Messaging's own retention: what deliveries leave behind goes when it is no longer useful.

A periodic job (`deliveries-cleanup`, every `retention_interval_seconds`, once across all
processes) deletes, oldest first, at most `retention_batch_size` rows per statement, each
statement its own transaction of the write path (on SQLite it takes its turn with ingest):

- the webhook log: attempts, and webhook messages delivered or dead with their items, older
  than `webhook_log_days` (30 by default: the window `POST /api/webhooks/{id}/replay` and the
  attempts log cover);
- message instances (the delivery log), their timelines and the delivery requests they came
  from, older than the event history's `retention_days` (730 by default): a message is kept
  as long as the events it caused.

Suppressions are never deleted by time: an address that bounced or complained stays off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import structlog

from beacon.platform import Platform
from beacon.storage.transaction import Tx
from beacon.storage.writer import Writer
from beacon.workers.registry import PeriodicJob

log = structlog.get_logger()

JOB = "deliveries-cleanup"
FINISHED_WEBHOOKS = "('delivered', 'dead')"


@dataclass(frozen=True, slots=True)
class CleanupReport:
    """Rows a pass deleted, per table."""

    webhook_attempts: int
    webhook_messages: int
    webhook_items: int
    message_instances: int
    message_timeline: int


async def clean(
    writer: Writer, *, now: datetime, webhook_log_days: int, retention_days: int, batch_size: int
) -> CleanupReport:
    """Delete what is past its time (see the module docstring); return what went."""
    webhook_cutoff = now - timedelta(days=webhook_log_days)
    attempts = await _in_batches(
        writer,
        "DELETE FROM webhook_attempts WHERE id IN (SELECT id FROM webhook_attempts"
        " WHERE at < ? ORDER BY id LIMIT ?)",
        webhook_cutoff,
        batch_size,
    )
    messages = items = 0
    while True:
        gone = await writer.run(lambda tx: _delete_webhook_messages(tx, webhook_cutoff, batch_size))
        messages, items = messages + gone[0], items + gone[1]
        if gone[0] < batch_size:
            break
    log_cutoff = now - timedelta(days=retention_days)
    instances = timeline = 0
    while True:
        gone = await writer.run(lambda tx: _delete_instances(tx, log_cutoff, batch_size))
        instances, timeline = instances + gone[0], timeline + gone[1]
        if gone[0] < batch_size:
            break
    return CleanupReport(attempts, messages, items, instances, timeline)


async def _in_batches(writer: Writer, statement: str, cutoff: datetime, batch_size: int) -> int:
    total = 0
    while True:

        async def delete(tx: Tx) -> int:
            return await tx.sql.execute(statement, cutoff, batch_size)

        deleted = await writer.run(delete)
        total += deleted
        if deleted < batch_size:
            return total


async def _delete_webhook_messages(tx: Tx, cutoff: datetime, limit: int) -> tuple[int, int]:
    rows = await tx.sql.fetch(
        f"SELECT id FROM webhook_messages WHERE status IN {FINISHED_WEBHOOKS}"
        " AND created_at < ? LIMIT ?",
        cutoff,
        limit,
    )
    ids = [str(row[0]) for row in rows]
    if not ids:
        return 0, 0
    marks = ", ".join("?" * len(ids))
    items = await tx.sql.execute(
        f"DELETE FROM webhook_items WHERE webhook_message_id IN ({marks})", *ids
    )
    messages = await tx.sql.execute(f"DELETE FROM webhook_messages WHERE id IN ({marks})", *ids)
    return messages, items


async def _delete_instances(tx: Tx, cutoff: datetime, limit: int) -> tuple[int, int]:
    """Delete the oldest instances before `cutoff`, with their timelines and the requests
    they came from; return the instances and timeline steps deleted."""
    rows = await tx.sql.fetch(
        "SELECT id, delivery_id FROM message_instances WHERE created_at < ?"
        " ORDER BY created_at LIMIT ?",
        cutoff,
        limit,
    )
    if not rows:
        return 0, 0
    ids = [int(row[0]) for row in rows]
    marks = ", ".join("?" * len(rows))
    timeline = await tx.sql.execute(
        f"DELETE FROM message_timeline WHERE instance_id IN ({marks})", *ids
    )
    await tx.sql.execute(
        f"DELETE FROM delivery_requests WHERE id IN ({marks})", *(str(row[1]) for row in rows)
    )
    instances = await tx.sql.execute(f"DELETE FROM message_instances WHERE id IN ({marks})", *ids)
    return instances, timeline


def cleanup_job(platform: Platform) -> PeriodicJob:
    """The periodic job deleting messaging rows past their time."""
    settings = platform.settings

    async def run() -> None:
        report = await clean(
            platform.writer,
            now=platform.clock.now(),
            webhook_log_days=settings.webhook_log_days,
            retention_days=settings.retention_days,
            batch_size=settings.retention_batch_size,
        )
        log.info("deliveries_cleanup_pass", **asdict(report))

    return PeriodicJob(JOB, timedelta(seconds=settings.retention_interval_seconds), run)
