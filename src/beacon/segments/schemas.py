"""Admin API shapes for computed attributes and segments (rules themselves are checked by
`rules.parse_rule`, which names every problem at its path)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from beacon.segments.service import SEGMENT_NAME

NAME_PATTERN = f"^{SEGMENT_NAME.pattern}$"


class SegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    description: str = ""
    rule: JsonValue = Field(description="the rule tree: see the README's segment rules")


class SegmentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    rule: JsonValue = Field(default=None, description="a new rule (a new version), or none")


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: JsonValue
    sample: int = Field(default=10, ge=0, le=100)


class PreviewOut(BaseModel):
    count: int
    sample: list[str]


class Progress(BaseModel):
    done: int
    total: int


class SegmentOut(BaseModel):
    id: str
    name: str
    description: str
    rule: Any
    version: int
    readable_version: int = Field(description="the version whose members readers see (0: none)")
    status: Literal["building", "ready"]
    progress: Progress | None
    members: int
    created_at: datetime
    updated_at: datetime
    computed_at: datetime | None


class AttributeOut(BaseModel):
    name: str
    description: str
    definition: dict[str, Any]
    status: Literal["building", "ready"]
    created_at: datetime
    updated_at: datetime


class MemberOut(BaseModel):
    profile_id: str
    since: datetime


class MemberPage(BaseModel):
    items: list[MemberOut]
    next_cursor: str | None


class MembershipOut(BaseModel):
    segment_id: str
    name: str
    since: datetime


class ChangeOut(BaseModel):
    segment_id: str
    name: str
    change: Literal["entered", "exited"]
    at: datetime
    imported: bool


class ProfileSegmentsOut(BaseModel):
    profile_id: str
    segments: list[MembershipOut]
    history: list[ChangeOut]
