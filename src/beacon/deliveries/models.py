"""Messaging's tables: templates, messages, their instances (the deliveries) with their
timelines, profiles' integer contact ids, and the suppression list.

Written with `core.sql` text in the write path (`library`, `instances`, `contacts`,
`suppression`); these classes are what the admin API reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from beacon.core.db import Base, JSONType, UtcDateTime

# SQLite hands out ids only to an INTEGER PRIMARY KEY (the rowid); PostgreSQL gets a bigint.
SerialId = BigInteger().with_variant(Integer(), "sqlite")


class MessageTemplate(Base):
    """A named template: per-channel parts in sandboxed Jinja2, checked when saved."""

    __tablename__ = "message_templates"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    content: Mapped[dict[str, Any]] = mapped_column(JSONType)
    version: Mapped[int] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Message(Base):
    """A template sent on one channel with a tag: what `messageId` names.

    `origin` names the messages made on first use (a journey's send, inline content); messages
    created through the API have none."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(SerialId, primary_key=True, autoincrement=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    template: Mapped[str | None] = mapped_column(String(128), nullable=True)
    channel: Mapped[str] = mapped_column(String(16))
    tag: Mapped[str | None] = mapped_column(String(200), nullable=True)
    transactional: Mapped[bool] = mapped_column(Boolean, default=False)
    origin: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class MessageInstance(Base):
    """One message sent to one person (`messageInstanceId`): one delivery request's delivery.

    `delivery_id` is its request's id (links and webhook ids carry it). `sending_by` and
    `sending_until` (real time) mark an attempt in flight."""

    __tablename__ = "message_instances"
    __table_args__ = (
        Index("ix_message_instances_profile", "profile_id", "id"),
        Index("ix_message_instances_message", "message_id", "id"),
        Index("ix_message_instances_status", "status", "id"),
        Index("ix_message_instances_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(SerialId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(36), unique=True)
    message_id: Mapped[int] = mapped_column(BigInteger)
    profile_id: Mapped[str] = mapped_column(String(36))
    contact_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str | None] = mapped_column(String(512), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer)
    retry_policy: Mapped[dict[str, Any]] = mapped_column(JSONType)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    content: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    provider_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    sending_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    sending_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    read_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class TimelineEntry(Base):
    """One step of a message instance's life: queued, each attempt, sent, read, clicked..."""

    __tablename__ = "message_timeline"
    __table_args__ = (Index("ix_message_timeline_instance", "instance_id", "id"),)

    id: Mapped[int] = mapped_column(SerialId, primary_key=True, autoincrement=True)
    instance_id: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)


class ProfileContact(Base):
    """A profile's stable integer id (`contactId` of the activity webhooks), given at first send."""

    __tablename__ = "profile_contacts"

    contact_id: Mapped[int] = mapped_column(SerialId, primary_key=True, autoincrement=True)
    profile_id: Mapped[str] = mapped_column(String(36), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Suppression(Base):
    """An address nothing is sent to: unsubscribed, bounced, complained, or added by hand."""

    __tablename__ = "suppressions"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # email, phone
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivery_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
