"""The workers' tables: keys of effects consumers had, messages they gave up on, live workers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from beacon.core.db import Base, JSONType, UtcDateTime


class ProcessedMessage(Base):
    """An effect a consumer has had, named by the key it chose (`idempotency.first_time`)."""

    __tablename__ = "processed_messages"

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class ConsumerDeadLetter(Base):
    """A message a consumer failed on `attempts` times, kept whole to be replayed."""

    __tablename__ = "consumer_dead_letters"
    __table_args__ = (
        Index("ix_consumer_dead_letters_consumer_failed_at", "consumer", "failed_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    consumer: Mapped[str] = mapped_column(String(100))
    topic: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(255))
    envelope: Mapped[str] = mapped_column(Text)  # `Envelope.encode()`
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    failed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    replayed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class WorkerHeartbeat(Base):
    """A process running consumers, and when it last said it was alive."""

    __tablename__ = "worker_heartbeats"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    names: Mapped[list[Any]] = mapped_column(JSONType)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime)
