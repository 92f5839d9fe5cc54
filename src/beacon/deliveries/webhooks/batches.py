"""The `webhook-batch` timer: an endpoint's waiting items become webhook messages, each one
JSON body of at most `webhook_batch_max_items` elements and `webhook_batch_max_bytes` bytes
with its own `webhook-id` (`msg_` and a UUIDv7), published as `webhook.due` for the sender.

It fires `webhook_batch_seconds` after the first item waited, or at once when a full batch
waits (`collect`); a batch not full is made only once its oldest item waited that long (else
the timer is set for then). Items wait, oldest first, while their endpoint is disabled.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from beacon.bus.messages import envelope
from beacon.core import jsonio
from beacon.core.ids import new_id
from beacon.core.sql import in_list
from beacon.deliveries.retry import RetryPolicy
from beacon.deliveries.webhooks.endpoints import (
    BATCH_KIND,
    Endpoint,
    batch_timer_key,
    load_endpoint,
)
from beacon.deliveries.webhooks.formats import body_of
from beacon.deliveries.webhooks.messages import WebhookDue
from beacon.identity.actions import db_time
from beacon.storage.transaction import Tx
from beacon.timers import store as timers
from beacon.timers.store import Timer
from beacon.workers.registry import TimerKind

BATCHES_PER_FIRING = 100  # then the timer is set again at once: one transaction stays short


class BatchMaker:
    """Makes batches within the size bounds."""

    def __init__(self, *, max_items: int, max_bytes: int, max_wait: timedelta) -> None:
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._max_wait = max_wait

    async def fire(self, tx: Tx, due: Sequence[Timer]) -> None:
        """Make the batches of the endpoints whose timers fired."""
        ids = sorted({str(t.payload["endpoint_id"]) for t in due})
        if tx.dialect == "postgresql":
            await tx.sql.fetch(
                f"SELECT id FROM webhook_endpoints WHERE id IN ({in_list(len(ids))})"
                " ORDER BY id FOR UPDATE",
                *ids,
            )
        for endpoint_id in ids:
            endpoint = await load_endpoint(tx.sql.fetch, endpoint_id)
            if endpoint is None or not endpoint.enabled:
                continue  # enabling it sets its timer again
            for _ in range(BATCHES_PER_FIRING):
                if not await self._make_one(tx, endpoint):
                    break
            else:
                await timers.schedule(
                    tx,
                    key=batch_timer_key(endpoint_id),
                    kind=BATCH_KIND,
                    run_at=tx.now,
                    payload={"endpoint_id": endpoint_id},
                )

    async def _make_one(self, tx: Tx, endpoint: Endpoint) -> bool:
        rows = await tx.sql.fetch(
            "SELECT id, element, occurred_at, created_at FROM webhook_items"
            " WHERE endpoint_id = ? AND webhook_message_id IS NULL ORDER BY id LIMIT ?",
            endpoint.id,
            self._max_items,
        )
        taken: list[tuple[Any, ...]] = []
        size = 64  # the brackets, and Amplitude's envelope
        for row in rows:
            size += len(row[1]) + 1
            if taken and size > self._max_bytes:
                break
            taken.append(row)
        if not taken:
            return False
        full = len(taken) == self._max_items or len(taken) < len(rows)
        due_at = (db_time(taken[0][3]) or tx.now) + self._max_wait
        if not full and due_at > tx.now:
            await timers.schedule(
                tx,
                key=batch_timer_key(endpoint.id),
                kind=BATCH_KIND,
                run_at=due_at,
                payload={"endpoint_id": endpoint.id},
            )
            return False
        message_id = "msg_" + new_id().replace("-", "")
        body = body_of(endpoint, [str(row[1]).encode() for row in taken])
        first = min(db_time(row[2]) or tx.now for row in taken)
        await tx.sql.execute(
            "INSERT INTO webhook_messages (id, endpoint_id, body, item_count, status, attempts,"
            " retry_policy, first_item_at, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)",
            message_id,
            endpoint.id,
            body.decode(),
            len(taken),
            jsonio.dumps_text(RetryPolicy().to_json()),
            first,
            tx.now,
            tx.now,
        )
        ids = [row[0] for row in taken]
        await tx.sql.execute(
            f"UPDATE webhook_items SET webhook_message_id = ? WHERE id IN ({in_list(len(ids))})",
            message_id,
            *ids,
        )
        tx.enqueue([envelope(WebhookDue(message_id, endpoint.id, 1))])
        return True


async def replay(
    tx: Tx, *, endpoint_id: str, since: datetime, until: datetime, delivered_too: bool
) -> int:
    """Send again the endpoint's messages made in [since, until) that were not delivered
    (given up, or held while it was disabled), or all of them; each keeps its `webhook-id` and
    gets a fresh retry schedule. Return how many."""
    statuses = ("failed", "held", "delivered") if delivered_too else ("failed", "held")
    rows = await tx.sql.fetch(
        "UPDATE webhook_messages SET status = 'pending', attempts = 0, next_attempt_at = NULL,"
        " updated_at = ? WHERE endpoint_id = ? AND created_at >= ? AND created_at < ?"
        f" AND status IN ({in_list(len(statuses))}) RETURNING id",
        tx.now,
        endpoint_id,
        since,
        until,
        *statuses,
    )
    tx.enqueue(envelope(WebhookDue(str(row[0]), endpoint_id, 1)) for row in rows)
    return len(rows)


def batch_timers(maker: BatchMaker) -> TimerKind:
    """The `webhook-batch` timer kind."""
    return TimerKind(BATCH_KIND, maker.fire)
