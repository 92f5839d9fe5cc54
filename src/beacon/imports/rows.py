"""One imported row: the event it holds and the person it is about, or why it was refused."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from beacon.core.clock import to_utc
from beacon.identity.numbers import INEXACT_ID, INEXACT_ID_TYPE, id_text, is_inexact_id
from beacon.identity.traits import TraitOp
from beacon.ingest.pipeline import RawEvent
from beacon.ingest.schemas import ID_MAX, IDENTITY_MAX

Person = tuple[str | None, str | None, str | None, str | None]  # user id, email, device, profile

# Epoch numbers at or above this are milliseconds (in seconds it would be the year 5138).
EPOCH_MILLIS_FROM = 100_000_000_000
DERIVED_ID_NAMESPACE = uuid.UUID("5d8f0a52-7c1e-4e0b-9a44-3f1b2c6d7e80")


class BadRow(Exception):
    """A row that cannot be imported; `reason` is a stable code, `message` says what is wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class ImportRow:
    """An event read from a file and who it is about (as the server-side events API names it)."""

    event: RawEvent
    user_id: str | None = None
    email: str | None = None
    anonymous_id: str | None = None
    profile_id: str | None = None
    traits: dict[str, Any] = field(default_factory=dict)
    operations: tuple[TraitOp, ...] = ()
    previous_id: str | None = None  # an alias: the profile this id names joins this person's

    def person(self) -> Person:
        return (self.user_id, self.email, self.anonymous_id, self.profile_id)


def derived_id(file_name: str, number: int, content: bytes) -> str:
    """Return the id of a row that has none: the same file row always gets the same id."""
    return str(uuid.uuid5(DERIVED_ID_NAMESPACE, f"{file_name}\n{number}\n{content.hex()}"))


def parse_time(value: Any, name: str = "time") -> datetime:
    """Read an event time: ISO-8601 text (naive means UTC) or epoch seconds or milliseconds."""
    if isinstance(value, str):
        text = value.strip()
        value = float(text) if text.isascii() and text.replace(".", "", 1).isdigit() else text
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value / 1000 if abs(value) >= EPOCH_MILLIS_FROM else value
            return datetime.fromtimestamp(seconds, UTC)
        if isinstance(value, str):
            return to_utc(datetime.fromisoformat(value))
        if isinstance(value, datetime):
            return to_utc(value)
    except (ValueError, OverflowError, OSError):
        pass
    raise BadRow("bad_time", f"{name}: {value!r} is not an ISO-8601 time or an epoch number")


def identity(value: Any, name: str) -> str | None:
    """Read an identity (user id, device id): text or a whole number; empty means absent."""
    value = id_text(value)
    if is_inexact_id(value):
        raise BadRow(INEXACT_ID_TYPE, f"{name}: {INEXACT_ID}")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRow("invalid_field", f"{name}: must be a string or a number")
    if len(value) > IDENTITY_MAX:
        raise BadRow("invalid_field", f"{name}: must be at most {IDENTITY_MAX} characters")
    return value


def email_address(value: Any, name: str = "email") -> str | None:
    """Read an email as the server-side API does: trimmed, lower case; empty means absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRow("invalid_field", f"{name}: must be a string")
    email = value.strip().lower()
    if not 3 <= len(email) <= IDENTITY_MAX:
        raise BadRow("invalid_field", f"{name}: must be 3 to {IDENTITY_MAX} characters")
    return email


def event_id(value: Any, name: str = "id") -> str | None:
    """Read a row's own event id (deduplication key): text or a whole number; empty means absent."""
    value = id_text(value)
    if is_inexact_id(value):
        raise BadRow(INEXACT_ID_TYPE, f"{name}: {INEXACT_ID}")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > ID_MAX:
        raise BadRow("invalid_field", f"{name}: must be a string of at most {ID_MAX} characters")
    return value


def event_type(value: Any, name: str = "type") -> str:
    """Read an event type: non-empty text of at most `ID_MAX` characters."""
    if value is None or value == "":
        raise BadRow("missing_type", f"{name}: every event needs a type")
    if not isinstance(value, str) or len(value) > ID_MAX:
        raise BadRow("invalid_field", f"{name}: must be a string of at most {ID_MAX} characters")
    return value


def mapping(value: Any, name: str) -> dict[str, Any]:
    """Read an object field; absent (null) is empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRow("invalid_field", f"{name}: must be an object")
    return value
