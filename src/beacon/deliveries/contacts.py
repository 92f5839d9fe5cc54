"""Profiles' integer contact ids (`contactId` in activity webhooks), given at a profile's first
send in a table of their own, so ingest never writes them."""

from __future__ import annotations

from beacon.storage.transaction import Tx


async def contact_id(tx: Tx, *, profile_id: str) -> int:
    """Return the profile's contact id, giving it one if it has none yet."""
    rows = await tx.sql.fetch(
        "SELECT contact_id FROM profile_contacts WHERE profile_id = ?", profile_id
    )
    if rows:
        return int(rows[0][0])
    await tx.sql.execute(
        "INSERT INTO profile_contacts (profile_id, created_at) VALUES (?, ?)"
        " ON CONFLICT (profile_id) DO NOTHING",
        profile_id,
        tx.now,
    )
    rows = await tx.sql.fetch(
        "SELECT contact_id FROM profile_contacts WHERE profile_id = ?", profile_id
    )
    return int(rows[0][0])
