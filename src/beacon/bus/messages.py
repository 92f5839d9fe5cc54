"""Messages on the bus: frozen, versioned, JSON-only.

An `Envelope` is what the bus moves (topic, partition key, JSON body); the body of an `events`
envelope is an `EventMessage`. Every message type round-trips through `to_body`/`from_body`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from beacon.core import jsonio

EVENTS_TOPIC = "events"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One bus message: `id` is unique (consumers deduplicate on it), `key` picks the partition."""

    id: str
    topic: str
    key: str
    body: dict[str, Any]

    def encode(self) -> bytes:
        return jsonio.dumps(
            {"id": self.id, "topic": self.topic, "key": self.key, "body": self.body}
        )

    @classmethod
    def decode(cls, data: bytes | str) -> Envelope:
        raw = jsonio.loads(data)
        return cls(id=raw["id"], topic=raw["topic"], key=raw["key"], body=raw["body"])


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    """The envelopes one transaction committed, kept as one outbox row until relayed."""

    id: str
    envelopes: list[Envelope]

    def encode(self) -> bytes:
        return jsonio.dumps(
            [{"id": e.id, "topic": e.topic, "key": e.key, "body": e.body} for e in self.envelopes]
        )

    @classmethod
    def decode(cls, batch_id: str, data: bytes | str) -> OutboxBatch:
        return cls(
            id=batch_id,
            envelopes=[
                Envelope(id=raw["id"], topic=raw["topic"], key=raw["key"], body=raw["body"])
                for raw in jsonio.loads(data)
            ],
        )


@dataclass(frozen=True, slots=True)
class EventMessage:
    """An event that was committed (or processed with saveEvents=false), version 1."""

    id: str
    type: str
    source_id: str
    profile_id: str | None
    session_id: str | None
    occurred_at: str
    received_at: str
    properties: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    valid: bool = True
    stored: bool = True
    imported: bool = False
    v: int = 1

    def to_body(self) -> dict[str, Any]:
        # Spelled out: dataclasses.asdict deep-copies and costs more than the rest of the path.
        return {
            "id": self.id,
            "type": self.type,
            "source_id": self.source_id,
            "profile_id": self.profile_id,
            "session_id": self.session_id,
            "occurred_at": self.occurred_at,
            "received_at": self.received_at,
            "properties": self.properties,
            "context": self.context,
            "valid": self.valid,
            "stored": self.stored,
            "imported": self.imported,
            "v": self.v,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> EventMessage:
        if body.get("v") != 1:
            raise ValueError(f"unsupported event message version {body.get('v')!r}")
        return cls(**body)

    def envelope(self) -> Envelope:
        return Envelope(
            id=self.id,
            topic=EVENTS_TOPIC,
            key=self.profile_id or self.session_id or self.id,
            body=self.to_body(),
        )
