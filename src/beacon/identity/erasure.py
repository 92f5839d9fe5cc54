"""Erasure: a person deleted everywhere, with a PII-free audit record of it.

Runs inside the ingest transaction like the other identity actions (`actions.py`), written once
against `core.sql.Sql`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from beacon.core import jsonio
from beacon.core.ids import new_id
from beacon.core.sql import Sql, in_list

ERASED_TABLES = ("events", "sessions", "identities")
MAX_MERGE_HOPS = 8  # merges point at the survivor (one hop); the bound only guards a cycle


async def erase_profile(sql: Sql, *, profile_id: str, now: datetime) -> dict[str, Any] | None:
    """Delete a person everywhere (with profiles merged into them); keep a PII-free audit row.

    Client event keys stay, so late retries of the person's events are recognised as already
    stored and re-create nothing. Returns the audit record, or None if the profile is unknown.
    """
    # Follow merges inside this transaction: a profile merged since the caller looked it up
    # is erased as the person it became, not as a leftover pointer.
    for _ in range(MAX_MERGE_HOPS):
        found = await sql.fetch("SELECT merged_into FROM profiles WHERE id = ?", profile_id)
        if not found:
            return None
        if found[0][0] is None:
            break
        profile_id = str(found[0][0])
    rows = await sql.fetch(
        "SELECT id FROM profiles WHERE id = ? OR merged_into = ?", profile_id, profile_id
    )
    ids = [str(r[0]) for r in rows]
    marks = in_list(len(ids))
    counts: dict[str, int] = {}
    for table in ERASED_TABLES:
        counted = await sql.fetch(
            f"SELECT count(*) FROM {table} WHERE profile_id IN ({marks})", *ids
        )
        counts[table] = int(counted[0][0])
        await sql.execute(f"DELETE FROM {table} WHERE profile_id IN ({marks})", *ids)
    await sql.execute(f"DELETE FROM profiles WHERE id IN ({marks})", *ids)
    counts["profiles"] = len(ids)
    record = {
        "id": new_id(),
        "subject": subject_digest(profile_id),
        "erased_at": now.isoformat(),
        "counts": counts,
    }
    await sql.execute(
        "INSERT INTO erasures (id, subject, erased_at, counts) VALUES (?, ?, ?, ?)",
        record["id"],
        record["subject"],
        now,
        jsonio.dumps_text(counts),
    )
    return record


def subject_digest(profile_id: str) -> str:
    """A one-way digest of a profile id: lets an auditor confirm an erasure, names nobody."""
    return hashlib.sha256(profile_id.encode()).hexdigest()


async def erasures_since(sql: Sql, since: datetime) -> list[str]:
    """Return the subject digests of erasures recorded after `since` (for other processes)."""
    rows = await sql.fetch("SELECT subject FROM erasures WHERE erased_at > ?", since)
    return [str(r[0]) for r in rows]
