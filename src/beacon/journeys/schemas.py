"""The journeys API's request bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from beacon.deps import UtcTime


class SimulateIn(BaseModel):
    """A dry run: the journey document, and how far back to replay (a duration: `30d`)."""

    document: Any
    since: str = Field(default="30d", examples=["30d", "12h"])
    until: UtcTime = None
    include_imported: bool = False  # replay imported history as if it had been live


class CancelIn(BaseModel):
    reason: str = Field(default="cancelled by an operator", max_length=500)
