"""The suppression list and consent: who is not sent to, and why.

An address is suppressed when its owner unsubscribed, when it bounced for good (an SMTP 5xx, a
permanent bounce reported to the inbound endpoint, a push subscription or phone number the
provider says is gone), when its owner complained of spam, or by hand. Transactional messages
(an order confirmation) still go to addresses that only unsubscribed; nothing goes to one that
bounced or complained. Consent is checked for other messages: a withdrawn decision for the
channel always stops them; where a source requires consent (`consent_required`), a profile
seen through such a source needs a granted decision.
"""

from __future__ import annotations

from typing import Any, Literal

from beacon.core.sql import Sql, in_list
from beacon.storage.transaction import Tx

Reason = Literal["unsubscribed", "bounced", "complained", "manual"]
REASONS: tuple[Reason, ...] = ("unsubscribed", "bounced", "complained", "manual")
TRANSACTIONAL_IGNORES = frozenset({"unsubscribed"})
CONSENT_CHANNEL = {"email": "email", "sms": "sms", "push": "push"}


def normalized(kind: str, address: str) -> str:
    """Return the form an address is kept in: emails without case, numbers as given."""
    return address.strip().lower() if kind == "email" else address.strip()


async def suppress(
    tx: Tx,
    *,
    kind: str,
    address: str,
    reason: Reason,
    detail: str | None = None,
    delivery_id: str | None = None,
) -> bool:
    """Put an address on the list; False if it was there already. Only an unsubscribe is
    replaced by a later reason (a bounce, a complaint): those are what stop transactional
    messages too."""
    changed = await tx.sql.execute(
        "INSERT INTO suppressions (kind, address, reason, detail, delivery_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, address) DO UPDATE SET"
        " reason = excluded.reason, detail = excluded.detail,"
        " delivery_id = excluded.delivery_id, created_at = excluded.created_at"
        " WHERE suppressions.reason = 'unsubscribed' AND excluded.reason <> 'unsubscribed'",
        kind,
        normalized(kind, address),
        reason,
        detail,
        delivery_id,
        tx.now,
    )
    return changed > 0


async def unsuppress(tx: Tx, *, kind: str, address: str) -> bool:
    """Take an address off the list; False if it was not on it."""
    return (
        await tx.sql.execute(
            "DELETE FROM suppressions WHERE kind = ? AND address = ?",
            kind,
            normalized(kind, address),
        )
        > 0
    )


async def suppression_of(sql: Sql, *, kind: str, address: str) -> str | None:
    """Return why an address is suppressed, or None if it is not."""
    rows = await sql.fetch(
        "SELECT reason FROM suppressions WHERE kind = ? AND address = ?",
        kind,
        normalized(kind, address),
    )
    return str(rows[0][0]) if rows else None


async def consent_problem(
    sql: Sql, *, profile_id: str, kind: str, consents: dict[str, Any]
) -> str | None:
    """Say why the profile may not get a non-transactional `kind` message, or None if it may."""
    channel = CONSENT_CHANNEL.get(kind)
    if channel is None:
        return None
    decision = consents.get(channel)
    if isinstance(decision, dict) and "granted" in decision:
        return None if decision["granted"] else f"{channel} consent withdrawn"
    strict = [str(r[0]) for r in await sql.fetch("SELECT id FROM sources WHERE consent_required")]
    if not strict:
        return None
    marks = in_list(len(strict))
    seen = await sql.fetch(
        f"SELECT 1 FROM sessions WHERE profile_id = ? AND source_id IN ({marks}) LIMIT 1",
        profile_id,
        *strict,
    ) or await sql.fetch(
        f"SELECT 1 FROM events WHERE profile_id = ? AND source_id IN ({marks}) LIMIT 1",
        profile_id,
        *strict,
    )
    if seen:
        return f"no {channel} consent, which a source of this profile requires"
    return None
