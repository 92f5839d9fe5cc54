"""Forgetting people: their delivery requests, message instances with what was sent and their
timelines, their contact ids, and their pending retries.

The suppression list keeps their addresses if they unsubscribed, bounced or complained: it is
what keeps Beacon from writing to them again (delete an entry through the API to drop it).
"""

from __future__ import annotations

from collections.abc import Sequence

from beacon.core.sql import chunks, in_list
from beacon.storage.transaction import Tx


async def forget_profiles(tx: Tx, profile_ids: Sequence[str]) -> int:
    """Erase what messaging kept of the people; return how many message instances went."""
    gone = 0
    for batch in chunks(profile_ids):
        marks = in_list(len(batch))
        rows = await tx.sql.fetch(
            f"SELECT id, delivery_id FROM message_instances WHERE profile_id IN ({marks})", *batch
        )
        for chunk in chunks(rows):
            ids = [row[0] for row in chunk]
            await tx.sql.execute(
                f"DELETE FROM message_timeline WHERE instance_id IN ({in_list(len(ids))})", *ids
            )
            for _, delivery_id in chunk:
                await tx.sql.execute(
                    "DELETE FROM timers WHERE key LIKE ?", f"delivery-retry:{delivery_id}:%"
                )
        for table in ("message_instances", "delivery_requests", "profile_contacts"):
            await tx.sql.execute(f"DELETE FROM {table} WHERE profile_id IN ({marks})", *batch)
        gone += len(rows)
    return gone
