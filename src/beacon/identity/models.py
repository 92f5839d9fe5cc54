"""The `profiles`, `identities` and `sessions` tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from beacon.core.db import Base, JSONType, UtcDateTime


class Profile(Base):
    """One person, known or anonymous."""

    __tablename__ = "profiles"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    traits: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    trait_times: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    consents: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    merged_into: Mapped[str | None] = mapped_column(String(36), nullable=True)
    merged_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True, index=True)


class Identity(Base):
    """A way to name a person (user id, email, device id…); each names one profile."""

    __tablename__ = "identities"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(256), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Session(Base):
    """One visit: a client-chosen id, the profile it belongs to and the context it reported."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_profile_id_created_at", "profile_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    profile_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    source_id: Mapped[str] = mapped_column(String(64))
    context: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Erasure(Base):
    """The audit record of a person's erasure: when, how much, and a digest of the id only."""

    __tablename__ = "erasures"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subject: Mapped[str] = mapped_column(String(64), index=True)
    erased_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    counts: Mapped[dict[str, Any]] = mapped_column(JSONType)
