"""The webhook tables: endpoints, the items waiting for a batch, the batches sent (each a
webhook message with one `webhook-id`), and every attempt to send one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from beacon.core.db import Base, JSONType, UtcDateTime
from beacon.deliveries.models import SerialId


class WebhookEndpointRow(Base):
    """A customer's URL and what it hears: message activity (`esputnik`), chosen event types
    (`events`), or chosen event types in Amplitude's HTTP API v2 format (`amplitude`)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    statuses: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    event_types: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSONType)
    secrets: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    enabled: Mapped[bool] = mapped_column(Boolean)
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WebhookItem(Base):
    """One element for one endpoint (an activity, an event), until a batch takes it."""

    __tablename__ = "webhook_items"
    __table_args__ = (
        Index("uq_webhook_items_endpoint_event", "endpoint_id", "event_id", unique=True),
        Index(
            "ix_webhook_items_waiting",
            "endpoint_id",
            "id",
            sqlite_where=text("webhook_message_id IS NULL"),
            postgresql_where=text("webhook_message_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(SerialId, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(String(36))
    event_id: Mapped[str] = mapped_column(String(64))
    element: Mapped[str] = mapped_column(Text)  # the element's JSON, exactly as it is sent
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    webhook_message_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class WebhookMessage(Base):
    """One batch posted to an endpoint: its body and `webhook-id` stay the same on every retry."""

    __tablename__ = "webhook_messages"
    __table_args__ = (
        Index("ix_webhook_messages_endpoint_created", "endpoint_id", "created_at"),
        Index("ix_webhook_messages_status", "status", "endpoint_id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(String(36))
    body: Mapped[str] = mapped_column(Text)
    item_count: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    retry_policy: Mapped[dict[str, Any]] = mapped_column(JSONType)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    sending_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    sending_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    first_item_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class WebhookAttempt(Base):
    """One POST of a webhook message (or a test send): status, latency, start of the answer."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_endpoint", "endpoint_id", "id"),)

    id: Mapped[int] = mapped_column(SerialId, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(String(36))
    webhook_message_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    outcome: Mapped[str] = mapped_column(String(24))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    response_excerpt: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
