"""The journeys' tables (migration 0008): definitions and versions, runs and their paths,
conversions, and the sends frequency caps count. Written and read with SQL in a `Tx`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from beacon.core.db import Base, JSONType, UtcDateTime


class JourneyRow(Base):
    """A journey: its current `version` and `status` (active, paused, archived)."""

    __tablename__ = "journeys"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class JourneyVersion(Base):
    """One version of a journey's document; runs keep the version they started on."""

    __tablename__ = "journey_versions"

    journey: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSONType)
    fingerprint: Mapped[str] = mapped_column(String(64))
    attributes: Mapped[list[Any]] = mapped_column(JSONType)  # definitions it was read with
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class JourneyRun(Base):
    """A run: its whole state as JSON (`Run.as_json`), and the columns it is found by."""

    __tablename__ = "journey_runs"
    __table_args__ = (
        Index("ix_journey_runs_profile", "profile_id", "journey"),
        Index("ix_journey_runs_journey_step", "journey", "status", "step"),
        Index("ix_journey_runs_waiting", "waiting_event_type", "waiting_match"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    journey: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    profile_id: Mapped[str] = mapped_column(String(36))
    key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    step: Mapped[str | None] = mapped_column(String(64), nullable=True)
    waiting_event_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    waiting_match: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class JourneyRunStep(Base):
    """One step a run entered (`seq` counts from its first), when it left and why."""

    __tablename__ = "journey_run_path"

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(36), index=True)
    step: Mapped[str] = mapped_column(String(64))
    entered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    why: Mapped[str | None] = mapped_column(Text, nullable=True)


class JourneyConversion(Base):
    """A run's conversion (its goal event), at most one per run."""

    __tablename__ = "journey_conversions"

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    journey: Mapped[str] = mapped_column(String(100), index=True)
    profile_id: Mapped[str] = mapped_column(String(36), index=True)
    event_id: Mapped[str] = mapped_column(String(255))
    converted_at: Mapped[datetime] = mapped_column(UtcDateTime)


class JourneySend(Base):
    """A message a journey asked for: what frequency caps count."""

    __tablename__ = "journey_sends"
    __table_args__ = (Index("ix_journey_sends_profile", "profile_id", "sent_at"),)

    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(36))
    channel: Mapped[str] = mapped_column(String(32))
    journey: Mapped[str] = mapped_column(String(100))
    sent_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
