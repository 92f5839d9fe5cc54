"""Webhook endpoints: a customer's URL, what it hears, its signing secrets, whether it is on.

Formats: `esputnik` (message activity, filtered by status), `events` (chosen event types, as
JSON), `amplitude` (chosen event types, posted to Amplitude's HTTP API v2 with the endpoint's
`api_key`). Secrets are `whsec_` secrets, newest first; rotating one keeps the old one signing
beside it for an overlap (real time: it is about receivers' deployments, not business time).
Disabling (by hand, on `410 Gone`, or after failing for days) records
`webhook.endpoint_disabled`; enabling sends again what waited.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from beacon import lifecycle
from beacon.bus.messages import envelope
from beacon.core import jsonio
from beacon.core.ids import new_id
from beacon.deliveries.activity import ActivityStatus
from beacon.deliveries.signing import new_secret
from beacon.deliveries.webhooks.messages import WebhookDue
from beacon.identity.actions import db_json, db_time
from beacon.storage.transaction import Tx
from beacon.timers import store as timers
from beacon.timers.store import Fetch

Format = Literal["esputnik", "events", "amplitude"]
FORMATS: tuple[Format, ...] = get_args(Format)
AMPLITUDE_URL = "https://api2.amplitude.com/2/httpapi"
BATCH_KIND = "webhook-batch"

SELECT_ENDPOINT = (
    "SELECT id, url, format, statuses, event_types, options, secrets, enabled, failing_since"
    " FROM webhook_endpoints"
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint as the collector and the sender see it."""

    id: str
    url: str
    format: Format
    statuses: frozenset[ActivityStatus] | None  # esputnik: None is every status
    event_types: frozenset[str]  # events, amplitude
    options: dict[str, Any]
    secrets: list[dict[str, Any]]
    enabled: bool
    failing_since: datetime | None


def endpoint_of(row: Sequence[Any]) -> Endpoint:
    """An `Endpoint` from a row of `SELECT_ENDPOINT`, from either database."""
    statuses, event_types = db_json(row[3]), db_json(row[4])
    return Endpoint(
        id=str(row[0]),
        url=str(row[1]),
        format=row[2],
        statuses=None if statuses is None else frozenset(statuses),
        event_types=frozenset(event_types or ()),
        options=db_json(row[5]) or {},
        secrets=list(db_json(row[6]) or []),
        enabled=bool(row[7]),
        failing_since=db_time(row[8]),
    )


async def load_endpoint(fetch: Fetch, endpoint_id: str) -> Endpoint | None:
    """Return the endpoint `endpoint_id`, or None (`fetch`: `tx.sql.fetch` or `Database.read`)."""
    rows = await fetch(SELECT_ENDPOINT + " WHERE id = ?", endpoint_id)
    return endpoint_of(rows[0]) if rows else None


async def all_endpoints(fetch: Fetch) -> list[Endpoint]:
    """Return every endpoint."""
    return [endpoint_of(row) for row in await fetch(SELECT_ENDPOINT)]


def signing_secrets(raw: Any, *, now: datetime) -> tuple[str, ...]:
    """Return the secrets that sign now, newest first (rotated ones until their overlap ends)."""
    secrets = []
    for entry in raw if isinstance(raw, list) else []:
        expires = entry.get("expires_at")
        if expires is None or datetime.fromisoformat(expires) > now:
            secrets.append(str(entry["secret"]))
    return tuple(secrets)


async def create_endpoint(
    tx: Tx,
    *,
    url: str,
    format: Format,
    statuses: Iterable[str] | None,
    event_types: Iterable[str] | None,
    options: dict[str, Any],
    description: str | None,
    enabled: bool,
) -> tuple[str, str]:
    """Create an endpoint; return its id and its first secret."""
    endpoint_id, secret = new_id(), new_secret()
    await tx.sql.execute(
        "INSERT INTO webhook_endpoints (id, url, format, statuses, event_types, options,"
        " secrets, enabled, description, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        endpoint_id,
        url,
        format,
        None if statuses is None else jsonio.dumps_text(sorted(statuses)),
        None if event_types is None else jsonio.dumps_text(sorted(event_types)),
        jsonio.dumps_text(options),
        jsonio.dumps_text([{"secret": secret, "expires_at": None, "created_at": _text(tx.now)}]),
        enabled,
        description,
        tx.now,
        tx.now,
    )
    return endpoint_id, secret


async def update_endpoint(tx: Tx, *, endpoint_id: str, changes: dict[str, Any]) -> bool:
    """Change an endpoint's url, statuses, event_types, options or description; False if
    there is no such endpoint."""
    columns = {"url", "statuses", "event_types", "options", "description"}
    assert set(changes) <= columns, changes
    values = [
        jsonio.dumps_text(v) if k in ("statuses", "event_types", "options") and v is not None else v
        for k, v in changes.items()
    ]
    sets = "".join(f"{name} = ?, " for name in changes)
    changed = await tx.sql.execute(
        f"UPDATE webhook_endpoints SET {sets}updated_at = ? WHERE id = ?",
        *values,
        tx.now,
        endpoint_id,
    )
    return changed > 0


async def delete_endpoint(tx: Tx, *, endpoint_id: str) -> bool:
    """Delete an endpoint with its waiting items, batches and attempts log."""
    for table in ("webhook_items", "webhook_messages", "webhook_attempts"):
        await tx.sql.execute(f"DELETE FROM {table} WHERE endpoint_id = ?", endpoint_id)
    await timers.cancel(tx, key=batch_timer_key(endpoint_id))
    return await tx.sql.execute("DELETE FROM webhook_endpoints WHERE id = ?", endpoint_id) > 0


async def rotate_secret(
    tx: Tx, *, endpoint_id: str, overlap: timedelta, now: datetime
) -> str | None:
    """Give the endpoint a new signing secret; the current ones keep signing beside it for
    `overlap` from `now` (real time). None if there is no such endpoint."""
    rows = await tx.sql.fetch("SELECT secrets FROM webhook_endpoints WHERE id = ?", endpoint_id)
    if not rows:
        return None
    secret = new_secret()
    until = _text(now + overlap)
    kept = [
        {**entry, "expires_at": min(entry["expires_at"] or until, until)}
        for entry in db_json(rows[0][0]) or []
        if entry.get("expires_at") is None or datetime.fromisoformat(entry["expires_at"]) > now
    ]
    secrets = [{"secret": secret, "expires_at": None, "created_at": _text(now)}, *kept]
    await tx.sql.execute(
        "UPDATE webhook_endpoints SET secrets = ?, updated_at = ? WHERE id = ?",
        jsonio.dumps_text(secrets),
        tx.now,
        endpoint_id,
    )
    return secret


async def disable_endpoint(tx: Tx, endpoint: Endpoint, *, reason: str) -> bool:
    """Stop sending to an endpoint and record `webhook.endpoint_disabled`; False if it was
    disabled already. What waits for it is kept: enabling it sends that."""
    changed = await tx.sql.execute(
        "UPDATE webhook_endpoints SET enabled = ?, disabled_reason = ?, disabled_at = ?,"
        " updated_at = ? WHERE id = ? AND enabled",
        False,
        reason,
        tx.now,
        tx.now,
        endpoint.id,
    )
    if not changed:
        return False
    event = lifecycle.endpoint_disabled(endpoint.id, endpoint.url, reason, tx.now)
    await lifecycle.record(tx, [event])
    return True


async def enable_endpoint(tx: Tx, *, endpoint_id: str) -> bool:
    """Send to an endpoint again: what was held for it goes now, waiting items are batched.
    False if there is no such endpoint."""
    rows = await tx.sql.fetch("SELECT enabled FROM webhook_endpoints WHERE id = ?", endpoint_id)
    if not rows:
        return False
    if rows[0][0]:
        return True
    await tx.sql.execute(
        "UPDATE webhook_endpoints SET enabled = ?, disabled_reason = NULL, disabled_at = NULL,"
        " failing_since = NULL, updated_at = ? WHERE id = ?",
        True,
        tx.now,
        endpoint_id,
    )
    held = await tx.sql.fetch(
        "UPDATE webhook_messages SET status = 'retrying', updated_at = ?"
        " WHERE endpoint_id = ? AND status = 'held' RETURNING id, attempts",
        tx.now,
        endpoint_id,
    )
    tx.enqueue(envelope(WebhookDue(str(i), endpoint_id, int(n) + 1)) for i, n in held)
    await timers.schedule(
        tx,
        key=batch_timer_key(endpoint_id),
        kind=BATCH_KIND,
        run_at=tx.now,
        payload={"endpoint_id": endpoint_id},
    )
    return True


def batch_timer_key(endpoint_id: str) -> str:
    """The key of the timer that makes the endpoint's next batch."""
    return f"{BATCH_KIND}:{endpoint_id}"


def _text(moment: datetime) -> str:
    return moment.isoformat()
