"""What the webhooks admin API reads and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from beacon.deliveries.activity import read_statuses
from beacon.deliveries.webhooks.endpoints import AMPLITUDE_URL, Format

EVENT_TYPE = Field(min_length=1, max_length=128)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointIn(Strict):
    """An endpoint: `esputnik` hears message activity (`statuses` filters it; null is every
    status); `events` and `amplitude` hear the `event_types` named (`amplitude` needs the
    project's `api_key`; its URL defaults to Amplitude's HTTP API v2)."""

    url: str | None = Field(default=None, min_length=1, max_length=2048)
    format: Format = "esputnik"
    statuses: list[str] | None = None
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=500)
    api_key: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    enabled: bool = True

    @model_validator(mode="after")
    def _fits_format(self) -> EndpointIn:
        check_format(self.format, self.statuses, self.event_types, self.api_key)
        if self.url is None:
            if self.format != "amplitude":
                raise ValueError("url is required")
            self.url = AMPLITUDE_URL
        return self


class EndpointUpdate(Strict):
    """Fields to change; `enabled` turns the endpoint off or on (on sends what was held)."""

    url: str | None = Field(default=None, min_length=1, max_length=2048)
    statuses: list[str] | None = None
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=500)
    api_key: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    enabled: bool | None = None


class SecretOut(BaseModel):
    """A signing secret, shown by its start only (whole only when made)."""

    starts: str
    created_at: str | None
    expires_at: str | None


class EndpointOut(BaseModel):
    id: str
    url: str
    format: str
    statuses: list[str] | None
    event_types: list[str] | None
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None
    description: str | None
    secrets: list[SecretOut]
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="The signing secret (whsec_...): shown this once")


class RotateIn(Strict):
    overlap_seconds: float = Field(
        default=86_400,
        ge=0,
        le=30 * 86_400,
        allow_inf_nan=False,
        description="How long the current secrets keep signing beside the new one",
    )


class RotateOut(BaseModel):
    secret: str
    previous_expire_at: datetime


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    webhook_message_id: str
    attempt: int
    at: datetime
    outcome: str
    status_code: int | None
    latency_ms: float | None
    response_excerpt: str | None
    error: str | None


class AttemptPage(BaseModel):
    items: list[AttemptOut]
    next_cursor: str | None


class WebhookMessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    status: str
    attempts: int
    item_count: int
    first_item_at: datetime
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None


class WebhookMessagePage(BaseModel):
    items: list[WebhookMessageOut]
    next_cursor: str | None


class ReplayIn(Strict):
    since: datetime
    until: datetime
    delivered_too: bool = Field(
        default=False, description="Send delivered messages again too (same webhook-id)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> ReplayIn:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("since and until need a UTC offset")
        if self.until <= self.since:
            raise ValueError("until must be after since")
        return self


class ReplayOut(BaseModel):
    replayed: int


class TestSendOut(BaseModel):
    webhook_id: str
    outcome: str
    status_code: int | None
    latency_ms: float | None
    response_excerpt: str | None
    error: str | None


def check_format(
    format: str, statuses: Any, event_types: list[str] | None, api_key: str | None
) -> None:
    """Refuse fields that do not fit the endpoint's format, naming them."""
    if format == "esputnik":
        read_statuses(statuses)  # ValueError names the bad status
        if event_types is not None:
            raise ValueError("event_types are for the events and amplitude formats")
    else:
        if statuses is not None:
            raise ValueError("statuses are for the esputnik format")
        if not event_types:
            raise ValueError(f"a {format} endpoint names the event_types it hears")
        if any(not t or len(t) > 128 for t in event_types):
            raise ValueError("event_types are names of 1 to 128 characters")
    if (format == "amplitude") != (api_key is not None):
        raise ValueError("api_key is for amplitude endpoints, which need one")
