"""The Tracardi `/track` wire format, as documented in its tracker payload reference.

Unknown fields are ignored, as Tracardi does, so clients that send more still work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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


class EventPayload(_Wire):
    id: str | None = Field(default=None, min_length=1, max_length=ID_MAX)
    type: str = Field(min_length=1, max_length=ID_MAX)
    properties: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    time: datetime | None = None


class TrackPayload(_Wire):
    source: EntityRef
    session: EntityRef
    profile: OptionalEntityRef | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    properties: dict[str, Any] = Field(default_factory=dict)
    events: list[EventPayload] = Field(default_factory=list)
    options: TrackOptions = Field(default_factory=TrackOptions)
