"""The Tracardi `/track` wire format, as documented in its tracker payload reference.

Unknown fields are ignored, as Tracardi does, so clients that send more still work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, TypeAdapter

ID_MAX = 128
IDENTITY_MAX = 256  # a user id, email or device id naming a person


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class EntityRef(_Wire):
    id: str = Field(min_length=1, max_length=ID_MAX)


class OptionalEntityRef(_Wire):
    id: str | None = Field(default=None, max_length=ID_MAX)


class TrackOptions(_Wire):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    debugger: bool = False
    profile: bool = False
    save_session: bool = Field(default=True, alias="saveSession")
    save_events: bool = Field(default=True, alias="saveEvents")


class EventTime(_Wire):
    """Tracardi's time object: `create` is when the event happened, `insert` when the client
    collected it (its `update` is ignored). Without an offset a time is UTC."""

    create: datetime | None = None
    insert: datetime | None = None

    def chosen(self) -> tuple[datetime, str] | None:
        """Return the time the event happened and the field that gave it, if any did."""
        if self.create is not None:
            return self.create, "create"
        if self.insert is not None:
            return self.insert, "insert"
        return None


_time_text = TypeAdapter(datetime)
_time_object = TypeAdapter(EventTime)


def read_event_time(value: Any) -> datetime | EventTime | None:
    """Read an event's `time`: ISO 8601 text (as before), or Tracardi's time object.

    One validator instead of a union, so a refusal names `time` or `time.create` and not the
    union's branches.
    """
    if value is None:
        return None
    if isinstance(value, dict):
        return _time_object.validate_python(value)
    return _time_text.validate_python(value)


class EventPayload(_Wire):
    id: str | None = Field(default=None, min_length=1, max_length=ID_MAX)
    type: str = Field(min_length=1, max_length=ID_MAX)
    properties: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    time: Annotated[datetime | EventTime | None, PlainValidator(read_event_time)] = None


class TrackPayload(_Wire):
    source: EntityRef
    session: EntityRef
    profile: OptionalEntityRef | None = None
    device: Any = None  # Tracardi's tracker sends {"id": …}, a per-browser id; kept in context
    context: dict[str, Any] = Field(default_factory=dict)
    properties: dict[str, Any] = Field(default_factory=dict)
    events: list[EventPayload] = Field(default_factory=list)
    options: TrackOptions = Field(default_factory=TrackOptions)
