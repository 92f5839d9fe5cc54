"""Admin API shapes for event types and the event history."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from beacon.settings import MAX_RETENTION_DAYS

EventTypeMode = Literal["enforce", "warn"]


class EventTypeIn(BaseModel):
    """An event type definition, as `PUT /api/event-types/{name}` or an applied file gives it."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    schema_: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        alias="schema",
        description="JSON Schema (draft 2020-12) the event's properties must match.",
    )
    mode: EventTypeMode = "warn"
    retention_days: int | None = Field(default=None, ge=1, le=MAX_RETENTION_DAYS)


class EventTypeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    name: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    mode: str
    retention_days: int | None
    created_at: datetime
    updated_at: datetime


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    type: str
    source_id: str
    profile_id: str | None
    session_id: str | None
    external_id: str | None
    occurred_at: datetime
    received_at: datetime
    properties: dict[str, Any]
    context: dict[str, Any]
    valid: bool
    errors: list[Any] | None
    imported: bool
