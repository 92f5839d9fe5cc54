"""What the ingest edge asks the store to commit, and what it answers.

These are plain values: the wire adapters build them, the writer commits a batch of them in one
transaction (`store.IngestStore` is their handler), and `plan.py` decides identities without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from beacon.identity.actions import Identify


@dataclass(slots=True)
class NewEvent:
    """One event ready to store: id assigned, properties validated, JSON already encoded."""

    id: str
    type: str
    occurred_at: datetime
    properties: dict[str, Any]
    context: dict[str, Any]
    external_id: str | None = None
    valid: bool = True
    errors: list[dict[str, Any]] | None = None
    imported: bool = False


@dataclass(slots=True)
class TrackCommand:
    """One accepted request: its events and how to attach them to a profile and a session."""

    source_id: str
    received_at: datetime
    events: list[NewEvent]
    resolve_profile: bool = True
    profile_id: str | None = None
    session_id: str | None = None
    session_context: dict[str, Any] = field(default_factory=dict)
    save_session: bool = True
    save_events: bool = True
    identify: Identify | None = None


@dataclass(slots=True)
class TrackOutcome:
    """What committing a `TrackCommand` did."""

    profile_id: str | None
    profile_created: bool
    session_id: str | None
    session_created: bool
    stored_event_ids: list[str]
    published_event_ids: list[str]
    duplicate_external_ids: list[str]


@dataclass(slots=True)
class DeadLetterCommand:
    """A rejected payload attributable to a source, kept with the reasons."""

    id: str
    source_id: str | None
    endpoint: str
    reason: str
    errors: list[dict[str, Any]]
    payload: str
    received_at: datetime
