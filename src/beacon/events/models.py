"""The `events`, `event_keys` and `event_types` tables.

On PostgreSQL `events` is partitioned by month of `occurred_at` (see the first migration), so its
primary key includes `occurred_at`; client-supplied ids are deduplicated through `event_keys`,
which is not partitioned.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String, Text, column, table
from sqlalchemy.orm import Mapped, mapped_column

from beacon.core.db import Base, JSONType, UtcDateTime


class Event(Base):
    """One thing that happened, as received, with its validation outcome."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_occurred_at", "occurred_at"),
        Index("ix_events_profile_id_occurred_at", "profile_id", "occurred_at"),
        Index("ix_events_type_occurred_at", "type", "occurred_at"),
        Index("ix_events_session_id", "session_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    type: Mapped[str] = mapped_column(String(128))
    source_id: Mapped[str] = mapped_column(String(64))
    profile_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    external_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    properties: Mapped[dict[str, Any]] = mapped_column(JSONType)
    context: Mapped[dict[str, Any]] = mapped_column(JSONType)
    valid: Mapped[bool] = mapped_column(Boolean, default=True)
    errors: Mapped[list[Any] | None] = mapped_column(JSONType, nullable=True)
    imported: Mapped[bool] = mapped_column(Boolean, default=False)


class EventKey(Base):
    """A client event id already stored for a source; a retry with it is not stored again."""

    __tablename__ = "event_keys"

    source_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class EventType(Base):
    """A registered event type: the JSON Schema its properties must match, and what to do if not."""

    __tablename__ = "event_types"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    schema: Mapped[dict[str, Any]] = mapped_column(JSONType)
    mode: Mapped[str] = mapped_column(String(16))
    retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


# `dead_letters` belongs to the ingest package, which sits above this one: the columns that
# retention (purging old ones) and the person export (those naming the person) read.
dead_letters = table(
    "dead_letters",
    column("id", String),
    column("source_id", String),
    column("endpoint", String),
    column("reason", String),
    column("payload", Text),
    column("received_at", UtcDateTime()),
)
