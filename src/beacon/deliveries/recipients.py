"""Who a message goes to: the profile's address for the kind of message and the channel.

Email goes to the profile's `email` identity, else its `email` trait (named by the `name`
trait, or `first_name` and `last_name`); SMS to its `phone` identity or trait (E.164); Web
Push to the subscription in its `push_subscription` trait (the browser's `toJSON()`); FCM to
its `fcm_token` identity or trait; a webhook message to the endpoint its context names
(`context.endpoint_id`), or, for a journey's webhook step, to the URL its content names. The
capture channel needs the same address as the channel it stands in for: what it keeps is what
would have gone out, to whom.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from beacon.core.sql import Sql
from beacon.deliveries.channels.base import (
    DeviceToken,
    EmailAddress,
    PhoneNumber,
    PushSubscription,
    Recipient,
    WebhookEndpoint,
)
from beacon.deliveries.webhooks.endpoints import signing_secrets
from beacon.identity.actions import db_json

ADDRESS_KINDS = {"email": "email", "sms": "phone"}  # kinds of message whose address is listed
Found = tuple[Recipient, str | None] | str  # the recipient and its listed address, or why none


async def identities_of(sql: Sql, profile_id: str) -> dict[str, str]:
    """Return the profile's identities, the first of each kind."""
    rows = await sql.fetch(
        "SELECT kind, value FROM identities WHERE profile_id = ? ORDER BY created_at, value",
        profile_id,
    )
    found: dict[str, str] = {}
    for kind, value in rows:
        found.setdefault(str(kind), str(value))
    return found


async def recipient_for(
    sql: Sql,
    *,
    kind: str,
    channel: str,
    traits: Mapping[str, Any],
    identities: Mapping[str, str],
    context: Mapping[str, Any],
    content: Mapping[str, Any] | None = None,
) -> Found:
    """Return the recipient of a `kind` message sent through `channel`, or why there is none."""
    try:
        if kind == "email":
            address = identities.get("email") or _text(traits.get("email"))
            if address is None:
                return "no recipient: the profile has no email address"
            recipient = EmailAddress(address, _name(traits))
            return recipient, recipient.address
        if kind == "sms":
            number = identities.get("phone") or _text(traits.get("phone"))
            if number is None:
                return "no recipient: the profile has no phone number"
            return PhoneNumber(number), number
        if kind == "push":
            return _push(channel, traits, identities)
        if content is not None and "url" in content:
            return await _call(sql, content)
        return await _endpoint(sql, context)
    except ValueError as error:
        return f"no recipient: {error}"


def _push(channel: str, traits: Mapping[str, Any], identities: Mapping[str, str]) -> Found:
    token = identities.get("fcm_token") or _text(traits.get("fcm_token"))
    subscription = traits.get("push_subscription")
    if channel != "fcm" and subscription is not None:
        return PushSubscription.from_json(subscription), None
    if channel != "web_push" and token is not None:
        return DeviceToken(token), None
    return "no recipient: the profile has no push subscription or FCM token"


async def _endpoint(sql: Sql, context: Mapping[str, Any]) -> Found:
    endpoint_id = context.get("endpoint_id")
    if not isinstance(endpoint_id, str):
        return "no recipient: a webhook message names its endpoint in context.endpoint_id"
    rows = await sql.fetch(
        "SELECT url, secrets FROM webhook_endpoints WHERE id = ? AND enabled", endpoint_id
    )
    if not rows:
        return f"no recipient: no enabled webhook endpoint {endpoint_id!r}"
    secrets = signing_secrets(db_json(rows[0][1]), now=datetime.now(UTC))
    return WebhookEndpoint(str(rows[0][0]), secrets), None


async def _call(sql: Sql, content: Mapping[str, Any]) -> Found:
    """A journey's call of a URL: signed with the secrets of the endpoint of that URL, if
    there is one."""
    url, method = str(content["url"]), str(content.get("method") or "POST").upper()
    if method != "POST":
        return f"no recipient: a webhook call is a POST, not a {method}"
    rows = await sql.fetch("SELECT secrets FROM webhook_endpoints WHERE url = ? AND enabled", url)
    secrets = signing_secrets(db_json(rows[0][0]), now=datetime.now(UTC)) if rows else ()
    raw = content.get("headers")
    headers = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
    return WebhookEndpoint(url, secrets, headers), None


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _name(traits: Mapping[str, Any]) -> str | None:
    name = _text(traits.get("name"))
    if name is None:
        parts = [_text(traits.get("first_name")), _text(traits.get("last_name"))]
        name = " ".join(p for p in parts if p) or None
    return None if name is None or "\n" in name or "\r" in name else name
