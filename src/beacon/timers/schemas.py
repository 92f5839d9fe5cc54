"""Admin API shapes for the clock and the timers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from beacon.timers.clock import MAX_ADVANCE

ClockMode = Literal["system", "manual"]


class ClockOut(BaseModel):
    now: datetime
    mode: ClockMode


class ClockAdvanceIn(BaseModel):
    """`{"seconds": N}` or `{"to": "2030-01-01T00:00:00Z"}`: exactly one of them."""

    model_config = ConfigDict(extra="forbid")

    seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_ADVANCE.total_seconds(),
        allow_inf_nan=False,
        strict=True,
        description="How far to move the clock forward, in seconds (a century at most).",
    )
    to: AwareDatetime | None = Field(
        default=None, description="The time to move the clock to (ISO-8601 with its offset)."
    )

    @model_validator(mode="after")
    def _one_of_seconds_or_to(self) -> ClockAdvanceIn:
        if (self.seconds is None) == (self.to is None):
            raise ValueError('give exactly one of "seconds" and "to"')
        return self


class ClockAdvanceOut(BaseModel):
    mode: ClockMode
    previous: datetime
    now: datetime
    fired: int = Field(description="Timers due at the new time that fired before this answer.")
    still_due: int = Field(description="Timers due at the new time not fired yet (see failing).")
    failing: int = Field(description="Of those, the ones whose handler failed (retried later).")


class FailingTimerOut(BaseModel):
    key: str
    kind: str
    run_at: datetime
    attempts: int
    last_error: str | None
    retry_at: datetime | None = Field(description="Real time of the next try.")


class TimersOut(BaseModel):
    pending: int
    failing: int
    failing_timers: list[FailingTimerOut] = Field(description="The oldest 100 failing timers.")
