"""The delivery request: what a journey step or a back-end hands to messaging, and no more.

A request names the person, the channel, a template (by name) or inline content per channel,
the variables to render with, and an idempotency key. `request_delivery` stores it in the
caller's transaction (a second request with the same key is the same request: nothing new is
stored; `request_deliveries` stores many in two statements) and publishes `delivery.requested`
once it commits, for the delivery worker (`worker`), which sends it as a message instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from beacon.bus.messages import DELIVERIES_TOPIC, Envelope, MessageType, declare
from beacon.core.ids import new_id
from beacon.core.jsonio import dumps_text
from beacon.core.sql import chunks, in_list
from beacon.storage.transaction import Tx

DELIVERY_REQUESTED = "delivery.requested"
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class DeliveryRequest:
    """One message to send to one person; `idempotency_key` makes a retry the same request."""

    profile_id: str
    channel: str
    idempotency_key: str
    requested_by: str  # "journey:<name>", "api", ...
    template: str | None = None
    content: dict[str, Any] | None = None  # per-channel parts, when there is no template
    variables: dict[str, Any] = field(default_factory=dict)
    message_id: int | None = None  # the message (`messageId`) sent; else one is made on first use

    def __post_init__(self) -> None:
        if (self.template is None) == (self.content is None):
            raise ValueError("a delivery request names a template or carries content, not both")
        if not 1 <= len(self.idempotency_key) <= MAX_KEY_LENGTH:
            raise ValueError(f"an idempotency key has 1 to {MAX_KEY_LENGTH} characters")


@declare
@dataclass(frozen=True, slots=True)
class DeliveryRequested:
    """A delivery request was stored; `request_id` names its row."""

    TYPE: ClassVar[MessageType] = MessageType(DELIVERY_REQUESTED, 1, DELIVERIES_TOPIC)

    id: str
    request_id: str
    profile_id: str
    channel: str

    @property
    def partition_key(self) -> str:
        return self.profile_id

    def to_body(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "profile_id": self.profile_id,
            "channel": self.channel,
            "v": self.TYPE.version,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Self:
        cls.TYPE.check_version(body)
        return cls(
            id=body["request_id"],
            request_id=body["request_id"],
            profile_id=body["profile_id"],
            channel=body["channel"],
        )

    def envelope(self) -> Envelope:
        return Envelope(
            id=self.id,
            topic=DELIVERIES_TOPIC,
            key=self.partition_key,
            body=self.to_body(),
            type=DELIVERY_REQUESTED,
        )


INSERT_REQUEST = (
    "INSERT INTO delivery_requests (id, idempotency_key, profile_id, channel, template,"
    " content, variables, requested_by, requested_at, status, message_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'requested', ?)"
    " ON CONFLICT (idempotency_key) DO NOTHING"
)


def _row(tx: Tx, request_id: str, request: DeliveryRequest) -> tuple[Any, ...]:
    content = None if request.content is None else dumps_text(request.content)
    return (
        request_id,
        request.idempotency_key,
        request.profile_id,
        request.channel,
        request.template,
        content,
        dumps_text(request.variables),
        request.requested_by,
        tx.now,
        request.message_id,
    )


def _published(tx: Tx, request_id: str, request: DeliveryRequest) -> str:
    message = DeliveryRequested(request_id, request_id, request.profile_id, request.channel)
    tx.enqueue([message.envelope()])
    return request_id


async def request_delivery(tx: Tx, request: DeliveryRequest) -> str | None:
    """Store `request` and publish it once `tx` commits; return its id, or None if a request
    with the same idempotency key was stored before (then nothing changes)."""
    request_id = new_id()
    rows = await tx.sql.fetch(f"{INSERT_REQUEST} RETURNING id", *_row(tx, request_id, request))
    return _published(tx, request_id, request) if rows else None


async def request_deliveries(tx: Tx, requests: Sequence[DeliveryRequest]) -> list[str | None]:
    """`request_delivery` for many requests in two statements, whatever their number; the ids
    in the order of `requests` (None for a key stored before, or earlier in `requests`)."""
    if not requests:
        return []
    ids = [new_id() for _ in requests]
    rows = [_row(tx, i, r) for i, r in zip(ids, requests, strict=True)]
    await tx.sql.executemany(INSERT_REQUEST, rows)
    stored: set[str] = set()
    for chunk in chunks(ids):
        rows = await tx.sql.fetch(
            f"SELECT id FROM delivery_requests WHERE id IN ({in_list(len(chunk))})", *chunk
        )
        stored.update(str(row[0]) for row in rows)
    return [
        _published(tx, i, r) if i in stored else None for i, r in zip(ids, requests, strict=True)
    ]
