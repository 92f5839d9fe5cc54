"""Admin API shapes for consumers, their dead letters and replays."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class ConsumerOut(BaseModel):
    name: str
    topic: str
    max_attempts: int
    lag: int | None  # waiting + pending; null when another process holds it in memory
    waiting: int | None
    pending: int | None
    dead_letters: int
    workers: int


class ConsumerDeadLetterOut(BaseModel):
    id: str
    consumer: str
    topic: str
    message_id: str
    envelope: dict[str, Any]
    error: str
    attempts: int
    failed_at: datetime
    replayed_at: datetime | None


class ReplayOut(BaseModel):
    id: str
    consumer: str
    message_id: str
    succeeded: bool
    error: str | None
    replayed_at: datetime | None
