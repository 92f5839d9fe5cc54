"""Admin API shapes for profiles."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from beacon.identity.traits import TraitOp

Channel = Literal["email", "sms", "push"]


class IdentityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: str
    value: str
    created_at: datetime


class ProfileOut(BaseModel):
    """A profile; sections other domains declare (`sections.ProfileSections`) follow its fields."""

    model_config = ConfigDict(extra="allow")

    id: str
    created_at: datetime
    updated_at: datetime
    last_seen_at: datetime | None
    traits: dict[str, Any]
    trait_times: dict[str, Any]
    consents: dict[str, Any]
    identities: list[IdentityOut]


class SessionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    source_id: str
    context: dict[str, Any]
    created_at: datetime


class TraitUpdate(BaseModel):
    """Trait operations, applied in this order: set, set_once, increment, append, unset."""

    model_config = ConfigDict(extra="forbid")

    set: dict[str, Any] = Field(default_factory=dict)
    set_once: dict[str, Any] = Field(default_factory=dict)
    increment: dict[str, int | float] = Field(default_factory=dict)
    append: dict[str, Any] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list)

    def operations(self) -> list[TraitOp]:
        ops = [TraitOp("set", k, v) for k, v in self.set.items()]
        ops += [TraitOp("set_once", k, v) for k, v in self.set_once.items()]
        ops += [TraitOp("increment", k, v) for k, v in self.increment.items()]
        ops += [TraitOp("append", k, v) for k, v in self.append.items()]
        ops += [TraitOp("unset", k) for k in self.unset]
        return ops


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    granted: bool
    source: str = Field(default="api", min_length=1, max_length=64)


class ErasureOut(BaseModel):
    id: str
    subject: str
    erased_at: datetime
    counts: dict[str, int]
