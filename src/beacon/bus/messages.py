"""Messages on the bus: frozen, versioned, JSON-only, each of a declared type on a named topic.

An `Envelope` is what the bus moves: a unique id (consumers deduplicate on it), its topic, the
partition key (the profile id: one person's messages stay in order), the name of its message
type and the JSON body. A message class declares its `MessageType` (name, version, topic) and is
registered with `declare`; it writes its body with `to_body` (the version as `v`) and reads it
back with `from_body`, which refuses a version it does not know. `read_message` turns any
envelope back into its message. Topics are fixed (`TOPICS`); later domains add message types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, Self, TypeVar

from beacon.core import jsonio

EVENTS_TOPIC = "events"
"""Every committed event (`EventMessage`), system events too."""
PROFILES_TOPIC = "profiles"
SEGMENTS_TOPIC = "segments"
JOURNEYS_TOPIC = "journeys"
DELIVERIES_TOPIC = "deliveries"
TOPICS = (EVENTS_TOPIC, PROFILES_TOPIC, SEGMENTS_TOPIC, JOURNEYS_TOPIC, DELIVERIES_TOPIC)

EVENT = "event"


class UnknownMessage(ValueError):
    """An envelope names a message type, or a version of one, this Beacon cannot read."""


@dataclass(frozen=True, slots=True)
class MessageType:
    """A kind of message: its unique name, the version its bodies are written in, its topic."""

    name: str
    version: int
    topic: str

    def check_version(self, body: dict[str, Any]) -> None:
        """Refuse a body written in another version than this one."""
        found = body.get("v")
        if type(found) is not int or found != self.version:
            raise UnknownMessage(
                f"unsupported {self.name} message version {found!r}:"
                f" this Beacon reads version {self.version}"
            )


class Message(Protocol):
    """What every message class offers (see `EventMessage`)."""

    TYPE: ClassVar[MessageType]

    @property
    def id(self) -> str: ...

    @property
    def partition_key(self) -> str:
        """The profile id the message is about (else the best stand-in): its partition."""
        ...

    def to_body(self) -> dict[str, Any]: ...

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Self: ...


M = TypeVar("M", bound=type[Message])

MESSAGE_TYPES: dict[str, type[Message]] = {}
"""Every declared message class, by its type's name."""


def declare(cls: M) -> M:
    """Register a message class (a class decorator): its name must be new, its topic known."""
    kind = cls.TYPE
    if kind.topic not in TOPICS:
        raise ValueError(f"message type {kind.name!r}: unknown topic {kind.topic!r}")
    if kind.name in MESSAGE_TYPES:
        raise ValueError(f"message type {kind.name!r} is declared already")
    MESSAGE_TYPES[kind.name] = cls
    return cls


@dataclass(frozen=True, slots=True)
class Envelope:
    """One bus message: `id` is unique (consumers deduplicate on it), `key` picks the partition.

    `type` names the message type of `body`; envelopes written before types had names are events.
    """

    id: str
    topic: str
    key: str
    body: dict[str, Any]
    type: str = EVENT
    _message: Any = field(default=None, init=False, repr=False, compare=False)
    """The message decoded from `body`, kept by `read_as` for the next consumer that asks."""

    def encode(self) -> bytes:
        return jsonio.dumps(self.as_json())

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "topic": self.topic,
            "key": self.key,
            "type": self.type,
            "body": self.body,
        }

    @classmethod
    def decode(cls, data: bytes | str) -> Envelope:
        return cls.from_json(jsonio.loads(data))

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Envelope:
        return cls(
            id=raw["id"],
            topic=raw["topic"],
            key=raw["key"],
            body=raw["body"],
            type=raw.get("type", EVENT),
        )


def envelope(message: Message) -> Envelope:
    """The envelope carrying `message` on its type's topic, keyed by its profile."""
    kind = message.TYPE
    carrier = Envelope(
        id=message.id,
        topic=kind.topic,
        key=message.partition_key,
        body=message.to_body(),
        type=kind.name,
    )
    object.__setattr__(carrier, "_message", message)
    return carrier


MessageT = TypeVar("MessageT", bound=Message)


def read_as(envelope: Envelope, cls: type[MessageT]) -> MessageT:
    """The `cls` message `envelope` carries, decoded once however many consumers read it.

    Consumers of one process share the envelopes the bus hands them (every consumer of the
    `events` topic reads each event); the first to ask decodes the body, the others get the
    same frozen message. Its dicts are shared too: consumers never change a message.
    """
    cached = envelope._message
    if type(cached) is cls:
        return cached
    message = cls.from_body(envelope.body)
    object.__setattr__(envelope, "_message", message)
    return message


def read_message(envelope: Envelope) -> Message:
    """The message `envelope` carries; `UnknownMessage` if its type or version is unknown."""
    cls = MESSAGE_TYPES.get(envelope.type)
    if cls is None or cls.TYPE.topic != envelope.topic:
        there = sorted(n for n, c in MESSAGE_TYPES.items() if c.TYPE.topic == envelope.topic)
        raise UnknownMessage(
            f"unknown message type {envelope.type!r} on topic {envelope.topic!r}"
            f" (known there: {', '.join(there) or 'none'})"
        )
    return read_as(envelope, cls)


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    """The envelopes one transaction committed, kept as one outbox row until relayed.

    `created_at` is known for rows read back from the outbox: the relay's place in it.
    """

    id: str
    envelopes: list[Envelope]
    created_at: datetime | None = None

    def encode(self) -> bytes:
        return jsonio.dumps([e.as_json() for e in self.envelopes])

    @classmethod
    def decode(cls, batch_id: str, data: bytes | str, created_at: datetime | None = None) -> Self:
        return cls(
            id=batch_id,
            envelopes=[Envelope.from_json(raw) for raw in jsonio.loads(data)],
            created_at=created_at,
        )


@declare
@dataclass(frozen=True, slots=True)
class EventMessage:
    """An event that was committed (or processed with saveEvents=false)."""

    TYPE: ClassVar[MessageType] = MessageType(EVENT, 1, EVENTS_TOPIC)

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

    @property
    def partition_key(self) -> str:
        """The profile, else the session (profile-less requests), else the event itself."""
        return self.profile_id or self.session_id or self.id

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
        cls.TYPE.check_version(body)
        return cls(**body)

    def envelope(self) -> Envelope:
        return envelope(self)
