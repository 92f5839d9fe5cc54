"""Building one event for `POST /api/v1/events`, checked and encoded when it is tracked."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any, TypedDict

from beacon_sdk.version import VERSION

ID_MAX = 128  # the server's limit on event ids and types
MAX_BODY_BYTES = 500_000  # under the server's 500 KiB request limit (checked after gunzip too)
BODY_OPEN, BODY_CLOSE = b'{"events":[', b"]}"
LIBRARY = {"name": "beacon-sdk-python", "version": VERSION}


@dataclass(frozen=True, slots=True)
class Event:
    """One event as it will be sent: its JSON object and that object encoded."""

    id: str
    data: dict[str, Any]
    encoded: bytes


class EventFields(TypedDict, total=False):
    """What `track` takes besides the event type: `build_event`'s keyword arguments."""

    user_id: str | int | None
    email: str | None
    anonymous_id: str | None
    profile_id: str | None
    properties: dict[str, Any] | None
    context: dict[str, Any] | None
    traits: dict[str, Any] | None
    time: datetime | None
    event_id: str | None


def build_event(
    event_type: str,
    *,
    user_id: str | int | None = None,
    email: str | None = None,
    anonymous_id: str | None = None,
    profile_id: str | None = None,
    properties: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None,
    time: datetime | None = None,
    event_id: str | None = None,
) -> Event:
    """Return the event, stamped with a new id and the current time unless given.

    Raises ValueError or TypeError for arguments that could never be sent: no person named,
    an empty type, values JSON cannot carry, an event too large for any request. Delivery
    problems are never raised.
    """
    if not event_type or len(event_type) > ID_MAX:
        raise ValueError(f"event_type must be 1 to {ID_MAX} characters")
    person = {
        "user_id": None if user_id is None else str(user_id),
        "email": email,
        "anonymous_id": anonymous_id,
        "profile_id": profile_id,
    }
    if not any(person.values()):
        raise ValueError("name the person: user_id, email, anonymous_id or profile_id")
    event_id = event_id or str(uuid.uuid4())
    if len(event_id) > ID_MAX:
        raise ValueError(f"event_id must be at most {ID_MAX} characters")
    data: dict[str, Any] = {
        "id": event_id,
        "type": event_type,
        **{kind: value for kind, value in person.items() if value},
        "time": (time or datetime.now(UTC)).isoformat(),
        "context": {"library": LIBRARY, **(context or {})},
    }
    if properties:
        data["properties"] = properties
    if traits:
        data["traits"] = traits
    encoded = encode(data)
    if len(BODY_OPEN) + len(encoded) + len(BODY_CLOSE) > MAX_BODY_BYTES:
        raise ValueError(f"the event is {len(encoded)} bytes, more than one request may carry")
    return Event(event_id, data, encoded)


def encode(value: Any) -> bytes:
    """Encode `value` as compact JSON; dates, times, UUIDs and decimals become strings."""
    text = json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
    )
    return text.encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | time_of_day):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} values cannot be sent as JSON")
