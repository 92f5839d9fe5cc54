"""What `advance` asks the integration to do: plain values, applied in one transaction.

Every effect has an `idempotency_key` made from the run id, the step's name and its visit
number (`<run>/<step>/<visit>`, with a suffix where a step makes more than one), so applying
the effects of a redelivered stimulus twice does nothing the second time (the integration
keeps the keys it applied: `workers.idempotency.first_time`). Timers' keys are their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias


@dataclass(frozen=True, slots=True)
class RequestDelivery:
    """Ask messaging to send a message: a named `template` or inline `content` (texts with
    `{{ variables }}`, unrendered), and `variables` to render them with."""

    run_id: str
    journey: str
    profile_id: str
    channel: str
    template: str | None
    content: Mapping[str, str] | None
    variables: Mapping[str, Any]
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class SendSkipped:
    """A send that did not happen, and why (`frequency_cap`), for reports."""

    run_id: str
    journey: str
    profile_id: str
    channel: str
    reason: str
    detail: Mapping[str, Any]
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class CallWebhook:
    run_id: str
    url: str
    method: str
    headers: Mapping[str, str]
    body: Any
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class UpdateTraits:
    """Change the profile's traits (increments make this one to apply exactly once)."""

    profile_id: str
    set: Mapping[str, Any]
    unset: tuple[str, ...]
    increment: Mapping[str, int | float]
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class EmitEvent:
    """Record an event of the profile (its id may be derived from the idempotency key)."""

    profile_id: str
    type: str
    properties: Mapping[str, Any]
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class ScheduleTimer:
    """Schedule a timer (`timers.store.schedule`) that fires `TimerFired(key)` on run `run_id`."""

    run_id: str
    key: str
    run_at: datetime

    @property
    def idempotency_key(self) -> str:
        return self.key


@dataclass(frozen=True, slots=True)
class CancelTimer:
    run_id: str
    key: str

    @property
    def idempotency_key(self) -> str:
        return f"{self.key}/cancel"


@dataclass(frozen=True, slots=True)
class RecordConversion:
    run_id: str
    journey: str
    profile_id: str
    event_id: str
    converted_at: datetime
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class RunEnded:
    """The run ended: `status` is completed, exited, converted or cancelled."""

    run_id: str
    journey: str
    profile_id: str
    status: str
    reason: str
    idempotency_key: str
    detail: Mapping[str, Any] = field(default_factory=dict)


Effect: TypeAlias = (
    RequestDelivery
    | SendSkipped
    | CallWebhook
    | UpdateTraits
    | EmitEvent
    | ScheduleTimer
    | CancelTimer
    | RecordConversion
    | RunEnded
)
