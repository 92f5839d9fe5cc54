"""The `outbox` table: messages committed with the data they describe, relayed after commit.

One row per committing transaction, holding all its envelopes as a JSON array: a batch of
hundreds of events costs one outbox insert and one delete, not hundreds. `envelope_count` lets
the relay read rows within an envelope budget without reading the envelopes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from beacon.core.db import Base, UtcDateTime


class OutboxRow(Base):
    """The envelopes of one transaction awaiting relay; the id is a UUIDv7."""

    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    envelopes: Mapped[str] = mapped_column(Text)
    envelope_count: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
