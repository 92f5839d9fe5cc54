"""The `timers` and `manual_clock` tables (written with `core.sql` text: see `store`, `clock`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from beacon.core.db import Base, UtcDateTime


class TimerRow(Base):
    """A pending timer. `run_at` is business time (the deployment's clock); `claimed_until` is
    real time: a claim's lease, or a failed timer's backoff, before which no process claims it."""

    __tablename__ = "timers"
    __table_args__ = (
        Index("ix_timers_run_at", "run_at", "key"),
        Index(
            "ix_timers_failing",
            "key",
            sqlite_where=text("attempts > 0"),
            postgresql_where=text("attempts > 0"),
        ),
    )

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(100))
    run_at: Mapped[datetime] = mapped_column(UtcDateTime)
    payload: Mapped[str] = mapped_column(Text)  # JSON
    claimed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")  # failed firings
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ManualClockRow(Base):
    """The deployment's business time under `BEACON_CLOCK=manual` (one row, id 1)."""

    __tablename__ = "manual_clock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    now: Mapped[datetime] = mapped_column(UtcDateTime)
