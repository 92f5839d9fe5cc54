"""Erasure: a person deleted everywhere, with a PII-free audit record of it.

Runs inside the ingest transaction like the other identity actions (`actions.py`), written once
against `core.sql.Sql`.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from beacon import lifecycle
from beacon.core import jsonio
from beacon.core.ids import new_id
from beacon.core.sql import Sql, chunks, in_list
from beacon.identity.numbers import could_be_a_number
from beacon.storage.transaction import Tx

ERASED_TABLES = ("events", "sessions", "identities")
LIKE_ESCAPE = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_"})
MAX_MERGE_HOPS = 8  # merges point at the survivor (one hop); the bound only guards a cycle


async def erase_profile(tx: Tx, *, profile_id: str) -> dict[str, Any] | None:
    """Delete a person everywhere (with profiles merged into them); keep a PII-free audit row;
    publish `profile.erased` (not stored) so that every consumer forgets them too.

    Client event keys stay, so late retries of the person's events are recognised as already
    stored and re-create nothing. Dead letters (refused payloads) that name the person go too
    (`_erase_dead_letters`). Returns the audit record, or None if the profile is unknown.
    """
    sql, now = tx.sql, tx.now
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
    names = await sql.fetch(f"SELECT value FROM identities WHERE profile_id IN ({marks})", *ids)
    counts: dict[str, int] = {}
    for table in ERASED_TABLES:
        counted = await sql.fetch(
            f"SELECT count(*) FROM {table} WHERE profile_id IN ({marks})", *ids
        )
        counts[table] = int(counted[0][0])
        await sql.execute(f"DELETE FROM {table} WHERE profile_id IN ({marks})", *ids)
    await sql.execute(f"DELETE FROM profiles WHERE id IN ({marks})", *ids)
    counts["profiles"] = len(ids)
    counts["dead_letters"] = await _erase_dead_letters(sql, {*ids, *(str(n[0]) for n in names)})
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
    lifecycle.publish_only(
        tx, lifecycle.profile_erased([profile_id, *sorted(set(ids) - {profile_id})], now)
    )
    return record


async def _erase_dead_letters(sql: Sql, names: set[str]) -> int:
    """Delete the dead letters whose payload names one of `names` (`names_person`).

    A refused payload was never tied to a profile, so it is found by what it says: a profile id,
    user id, email or device id of the person. A short id may also match another person's
    refused payload; those are diagnostics, and deleting one more is the safe side of an erasure.
    """
    deleted = 0
    for name in sorted(names):
        rows = await sql.fetch(
            f"SELECT id, payload FROM dead_letters WHERE {NAMES_PERSON}", naming_pattern(name)
        )
        ids = [str(row[0]) for row in rows if names_person(str(row[1]), name)]
        for batch in chunks(ids):
            await sql.execute(
                f"DELETE FROM dead_letters WHERE id IN ({in_list(len(batch))})", *batch
            )
        deleted += len(ids)
    return deleted


NAMES_PERSON = "lower(payload) LIKE ? ESCAPE '\\'"
"""The dead letters that may name a person (`naming_pattern`); `names_person` decides."""


def naming_pattern(name: str) -> str:
    """The `NAMES_PERSON` pattern for one of a person's ids, emails or device ids: the name as a
    JSON string, or for an integer id its digits (clients may send those as a number)."""
    if could_be_a_number(name):
        return f"%{name}%"
    return "%" + jsonio.dumps_text(name).lower().translate(LIKE_ESCAPE) + "%"


def names_person(payload: str, name: str) -> bool:
    """Whether a refused payload holds `name` as a JSON string (any case) or, for an integer
    id, as a JSON number (a value in an object or array, not digits inside other text)."""
    if jsonio.dumps_text(name).lower() in payload.lower():
        return True
    if not could_be_a_number(name):
        return False
    return re.search(rf"[:\[,]\s*{re.escape(name)}\s*[,\]}}]", payload) is not None


def subject_digest(profile_id: str) -> str:
    """A one-way digest of a profile id: lets an auditor confirm an erasure, names nobody."""
    return hashlib.sha256(profile_id.encode()).hexdigest()


async def erasures_since(sql: Sql, since: datetime) -> list[str]:
    """Return the subject digests of erasures recorded after `since` (for other processes)."""
    rows = await sql.fetch("SELECT subject FROM erasures WHERE erased_at > ?", since)
    return [str(r[0]) for r in rows]
