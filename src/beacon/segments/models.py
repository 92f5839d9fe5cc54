"""The segments' tables: definitions (computed attributes, segments and their versions), each
profile's attribute states, memberships and their history.

State keys are definition fingerprints (`AttributeDefinition.fingerprint`): a state computed for
one fingerprint serves every definition with it, a hidden event count shared by two segments as
well as a user's attribute under any name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from beacon.core.db import Base, JSONType, UtcDateTime


class ComputedAttribute(Base):
    """A user-defined computed attribute; `ready_key` is the state key readers use (its build
    finished), `key` the one computed now (they differ while an edit is rebuilt)."""

    __tablename__ = "computed_attributes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    key: Mapped[str] = mapped_column(String(64))
    ready_definition: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    ready_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    run_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    run_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)  # real time
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Segment(Base):
    """A segment: readers see the members of `readable_version` (0: none computed yet) while
    `version`, when newer, is computed aside by the run holding `run_owner` until `run_until`."""

    __tablename__ = "segments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(Integer)
    readable_version: Mapped[int] = mapped_column(Integer, server_default="0")
    run_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    run_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)  # real time
    progress_done: Mapped[int] = mapped_column(Integer, server_default="0")
    progress_total: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    computed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class SegmentVersion(Base):
    """One version of a segment's rule, with the computed attributes it was read with."""

    __tablename__ = "segment_versions"

    segment_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule: Mapped[Any] = mapped_column(JSONType)
    attributes: Mapped[list[Any]] = mapped_column(JSONType)  # definitions, as JSON
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SegmentCatalog(Base):
    """One row whose `generation` moves with every change of definitions, so workers reload
    theirs only when it moved."""

    __tablename__ = "segment_catalog"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)


class AttributeState(Base):
    """A profile's state of one computed definition (`key`: its fingerprint), and its value
    when last written (`attribute_state.value` reads it again at any later time)."""

    __tablename__ = "attribute_states"
    __table_args__ = (Index("ix_attribute_states_key", "key"),)

    profile_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSONType)
    value: Mapped[Any] = mapped_column(JSONType, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SegmentMember(Base):
    """A profile in one version of a segment since a time."""

    __tablename__ = "segment_members"
    __table_args__ = (Index("ix_segment_members_profile_id", "profile_id"),)

    segment_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    since: Mapped[datetime] = mapped_column(UtcDateTime)


class SegmentChange(Base):
    """A profile entering or leaving a segment; `event_id` names the `segment.entered` or
    `segment.exited` system event recorded for it (null until recorded, after a recompute)."""

    __tablename__ = "segment_history"
    __table_args__ = (
        Index("ix_segment_history_profile_id_at", "profile_id", "at"),
        Index("ix_segment_history_segment_id_at", "segment_id", "at"),
        Index(
            "ix_segment_history_unrecorded",
            "id",
            sqlite_where=text("event_id IS NULL"),
            postgresql_where=text("event_id IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    segment_id: Mapped[str] = mapped_column(String(36))
    segment_name: Mapped[str] = mapped_column(String(128))
    profile_id: Mapped[str] = mapped_column(String(36))
    version: Mapped[int] = mapped_column(Integer)
    change: Mapped[str] = mapped_column(String(8))  # entered | exited
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    imported: Mapped[bool] = mapped_column(Boolean, default=False)
    event_id: Mapped[str | None] = mapped_column(String(36), nullable=True)


class PassedEvents(Base):
    """Events the segments consumer passed while nothing was defined, one row per batch:
    `event_ids` is their ids as a JSON array (`states.pass_events`). The rows become
    idempotency keys, one per event, once something is defined (`states.expand_passed`)."""

    __tablename__ = "segment_passed_events"
    __table_args__ = (Index("ix_segment_passed_events_passed_at", "passed_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    passed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    event_ids: Mapped[str] = mapped_column(Text)
