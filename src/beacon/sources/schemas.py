"""Admin API shapes for sources."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from beacon.lifecycle import SYSTEM_SOURCE

SOURCE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


class SourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        default=None, pattern=SOURCE_ID_PATTERN, description="Generated if omitted."
    )
    name: str = Field(min_length=1, max_length=200)
    enabled: bool = True
    consent_required: bool = False
    allowed_origins: list[str] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value == SYSTEM_SOURCE:
            raise ValueError(f"{SYSTEM_SOURCE!r} is reserved: Beacon's own events carry it")
        return value


class SourceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    enabled: bool | None = None
    consent_required: bool | None = None
    allowed_origins: list[str] | None = None


class SourceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    write_key: str
    enabled: bool
    consent_required: bool
    allowed_origins: list[str]
    created_at: datetime
    updated_at: datetime
