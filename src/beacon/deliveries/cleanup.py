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

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import partial

import structlog

from beacon.core.clock import days_before
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
    webhook_cutoff = days_before(now, webhook_log_days)
    log_cutoff = days_before(now, retention_days)

    async def attempts(tx: Tx) -> tuple[int, int]:
        deleted = await tx.sql.execute(
            "DELETE FROM webhook_attempts WHERE id IN (SELECT id FROM webhook_attempts"
            " WHERE at < ? ORDER BY id LIMIT ?)",
            webhook_cutoff,
            batch_size,
        )
        return deleted, 0

    webhooks = partial(_delete_webhook_messages, cutoff=webhook_cutoff, limit=batch_size)
    delivery_log = partial(_delete_instances, cutoff=log_cutoff, limit=batch_size)
    attempts_gone, _ = await _drain(writer, attempts, batch_size)
    messages, items = await _drain(writer, webhooks, batch_size)
    instances, timeline = await _drain(writer, delivery_log, batch_size)
    return CleanupReport(attempts_gone, messages, items, instances, timeline)


async def _drain(
    writer: Writer, step: Callable[[Tx], Awaitable[tuple[int, int]]], batch_size: int
) -> tuple[int, int]:
    """Run `step` (one transaction each) until it deletes fewer than `batch_size` rows;
    return the sums of the (rows, dependent rows) it deleted."""
    rows = dependent = 0
    while True:
        deleted, with_them = await writer.run(step)
        rows, dependent = rows + deleted, dependent + with_them
        if deleted < batch_size:
            return rows, dependent


async def _delete_webhook_messages(tx: Tx, *, cutoff: datetime, limit: int) -> tuple[int, int]:
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


async def _delete_instances(tx: Tx, *, cutoff: datetime, limit: int) -> tuple[int, int]:
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
