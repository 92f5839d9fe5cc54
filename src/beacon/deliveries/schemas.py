"""What the messaging admin API reads and answers: templates, messages, sends, the delivery
log, suppressions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from beacon.deliveries.library import TEMPLATE_NAME_PATTERN
from beacon.deliveries.templates import ChannelKind

TemplateName = Annotated[str, Field(pattern=TEMPLATE_NAME_PATTERN)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemplateIn(Strict):
    """A template: per channel, its parts (`{"email": {"subject", "html", "text"}}`)."""

    name: TemplateName
    content: dict[str, Any]
    description: str | None = Field(default=None, max_length=2000)


class TemplateUpdate(Strict):
    content: dict[str, Any]
    description: str | None = Field(default=None, max_length=2000)


class TemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    content: dict[str, Any]
    version: int
    description: str | None
    created_at: datetime
    updated_at: datetime


class SampleProfile(Strict):
    """A made-up profile to preview with."""

    traits: dict[str, Any] = Field(default_factory=dict)
    attributes: dict[str, Any] = Field(default_factory=dict)
    identities: dict[str, str] = Field(default_factory=dict)


class EventIn(Strict):
    """The event a message is about, as templates read it (`event.*`)."""

    type: str = Field(min_length=1, max_length=128)
    id: str | None = Field(default=None, max_length=128)
    time: datetime | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class PreviewIn(Strict):
    """Render with a stored profile (`profile_id`, or `to`: one identity), else with
    `sample` (else Beacon's sample profile)."""

    channel: ChannelKind | None = None
    profile_id: str | None = None
    to: dict[str, str] | None = Field(default=None, min_length=1, max_length=1)
    sample: SampleProfile | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    event: EventIn | None = None


class PreviewOut(BaseModel):
    channel: ChannelKind
    profile_id: str
    parts: dict[str, str]
    one_click_unsubscribe_url: str | None


class MessageIn(Strict):
    """A message: a template on one channel, with a tag (`messageTag`)."""

    template: TemplateName
    channel: ChannelKind
    name: str | None = Field(default=None, max_length=200)
    tag: str | None = Field(default=None, max_length=200)
    transactional: bool = Field(
        default=False,
        description="Sent to addresses that unsubscribed and without consent (an order"
        " confirmation); never to ones that bounced or complained.",
    )


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str | None
    template: str | None
    channel: str
    tag: str | None
    transactional: bool
    origin: str | None
    created_at: datetime


class SendIn(Strict):
    """One person, by one identity (`{"email": ...}`, `{"user_id": ...}`, `{"profile_id":
    ...}`), and the template's `context` values."""

    to: dict[str, str] = Field(min_length=1, max_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    event: EventIn | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_identity(self) -> SendIn:
        [(kind, value)] = self.to.items()
        if not kind or len(kind) > 32 or not value or len(value) > 256:
            raise ValueError("to names one identity: a kind (1-32 characters) and a value")
        return self


class SendOut(BaseModel):
    delivery_id: str
    message_id: int
    profile_id: str
    duplicate: bool


class TimelineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    status: str
    attempt: int | None
    detail: str | None
    latency_ms: float | None


class DeliveryOut(BaseModel):
    """A delivery: `requested` until the delivery worker takes it up (then it has its
    `message_instance_id`), then queued, sending, retrying, sent, failed, dead, skipped or
    bounced."""

    id: str
    message_instance_id: int | None
    message_id: int | None
    message_tag: str | None
    profile_id: str
    contact_id: int | None
    kind: str
    channel: str
    recipient: str | None
    status: str
    status_reason: str | None
    attempts: int
    next_attempt_at: datetime | None
    read_at: datetime | None
    unsubscribed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    content: dict[str, Any] | None = Field(
        description="What was (or, on the capture channel, would have been) sent"
    )


class DeliveryDetail(DeliveryOut):
    timeline: list[TimelineOut]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class SuppressionIn(Strict):
    kind: Literal["email", "phone"] = "email"
    address: str = Field(min_length=3, max_length=320)
    reason: Literal["unsubscribed", "bounced", "complained", "manual"] = "manual"
    detail: str | None = Field(default=None, max_length=2000)


class SuppressionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: str
    address: str
    reason: str
    detail: str | None
    delivery_id: str | None
    created_at: datetime


class BounceIn(Strict):
    """A bounce or a spam complaint from a mail provider: the address, and the message if
    known (`delivery_id`, or the `Message-ID` Beacon gave it)."""

    type: Literal["bounce", "complaint"]
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    delivery_id: str | None = Field(default=None, max_length=36)
    message_id: str | None = Field(default=None, max_length=998)
    permanent: bool = True
    description: str | None = Field(default=None, max_length=2000)


class ChannelsOut(BaseModel):
    """Which channel sends each kind of message, and what every channel needs configured."""

    kinds: dict[str, str]
    channels: list[dict[str, Any]]
