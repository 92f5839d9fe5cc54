"""Bus messages survive encoding exactly and refuse versions they do not know; every declared
message type round-trips through its envelope."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import ClassVar

import pytest

import beacon
from beacon.bus.messages import (
    EVENTS_TOPIC,
    MESSAGE_TYPES,
    TOPICS,
    Envelope,
    EventMessage,
    Message,
    MessageType,
    OutboxBatch,
    UnknownMessage,
    declare,
    envelope,
    read_as,
    read_message,
)
from beacon.core import jsonio
from beacon.deliveries.requests import DeliveryRequested
from beacon.deliveries.webhooks.messages import WebhookDue
from beacon.deliveries.worker import DeliveryAttemptDue


def import_every_module() -> None:
    """Import all of Beacon, so every message type any module declares is registered (the
    migrations run Alembic and `__main__` the command line when imported: they declare none)."""
    for module in pkgutil.walk_packages(beacon.__path__, "beacon."):
        if not module.name.startswith(("beacon.migrations", "beacon.__main__")):
            importlib.import_module(module.name)


import_every_module()


def make_event(**overrides: object) -> EventMessage:
    fields: dict[str, object] = {
        "id": "0190a5c4-0000-7000-8000-000000000001",
        "type": "page_viewed",
        "source_id": "src-1",
        "profile_id": "profile-1",
        "session_id": "session-1",
        "occurred_at": "2024-07-01T12:00:00.000Z",
        "received_at": "2024-07-01T12:00:01.000Z",
        "properties": {"url": "https://example.com/ä", "depth": 3, "ratio": 0.5, "tags": ["a"]},
        "context": {"ip": None, "consent": True},
    }
    fields.update(overrides)
    return EventMessage(**fields)  # type: ignore[arg-type]


def test_envelope_round_trips_through_encode_and_decode() -> None:
    envelope = Envelope(
        id="e-1",
        topic="events",
        key="profile-1",
        body={"text": "héllo ✓", "n": 12345678901234, "f": 1.5, "none": None, "nested": {"a": [1]}},
    )

    assert Envelope.decode(envelope.encode()) == envelope
    assert Envelope.decode(envelope.encode().decode()) == envelope


def test_event_message_round_trips_through_body_and_envelope() -> None:
    message = make_event(valid=False, stored=False, imported=True)

    decoded = Envelope.decode(message.envelope().encode())

    assert decoded.topic == EVENTS_TOPIC
    assert decoded.id == message.id
    assert EventMessage.from_body(decoded.body) == message
    assert EventMessage.from_body(message.to_body()) == message


@pytest.mark.parametrize(
    ("profile_id", "session_id", "expected_key"),
    [
        ("profile-1", "session-1", "profile-1"),
        (None, "session-1", "session-1"),
        (None, None, "0190a5c4-0000-7000-8000-000000000001"),
    ],
)
def test_event_envelope_is_keyed_by_profile_then_session_then_event(
    profile_id: str | None, session_id: str | None, expected_key: str
) -> None:
    message = make_event(profile_id=profile_id, session_id=session_id)

    assert message.envelope().key == expected_key


@pytest.mark.parametrize("version", [2, 0, None, "1"])
def test_event_message_refuses_an_unknown_version(version: object) -> None:
    body = make_event().to_body()
    body["v"] = version

    with pytest.raises(ValueError, match="unsupported event message version"):
        EventMessage.from_body(body)


def test_event_message_refuses_a_body_without_version() -> None:
    body = make_event().to_body()
    del body["v"]

    with pytest.raises(ValueError, match="unsupported event message version"):
        EventMessage.from_body(body)


def test_a_decoded_envelope_gives_every_consumer_the_same_message() -> None:
    message = make_event()
    decoded = Envelope.decode(message.envelope().encode())

    first = read_as(decoded, EventMessage)

    assert first == message
    assert read_as(decoded, EventMessage) is first  # decoded once, however many consumers
    assert read_message(decoded) is first


def test_an_envelope_made_from_a_message_carries_it() -> None:
    message = make_event()

    assert read_as(message.envelope(), EventMessage) is message


def test_reading_an_envelope_still_refuses_an_unknown_version() -> None:
    body = make_event().to_body()
    body["v"] = 2
    carrier = Envelope(id="e-1", topic=EVENTS_TOPIC, key="profile-1", body=body)

    with pytest.raises(UnknownMessage, match="unsupported event message version 2"):
        read_as(carrier, EventMessage)
    with pytest.raises(UnknownMessage):  # a failed decoding is not remembered as a success
        read_as(carrier, EventMessage)


def test_outbox_batch_round_trips_every_envelope_in_order() -> None:
    envelopes = [make_event().envelope(), make_event(id="second", profile_id=None).envelope()]
    batch = OutboxBatch("row-1", envelopes)
    decoded = OutboxBatch.decode("row-1", batch.encode())
    assert decoded == batch


# --- every declared message type -----------------------------------------------------------------

# One example of each message type. Declaring a type without adding its example here fails
# `test_every_message_type_has_an_example`, so no type escapes the round trip.
EXAMPLES: dict[str, Message] = {
    "event": make_event(valid=False, imported=True, context={"device": {"id": "d-1"}}),
    "delivery.requested": DeliveryRequested("r-1", "r-1", "p-1", "email"),
    "delivery.attempt_due": DeliveryAttemptDue("d-1:2", "d-1", "p-1", 2),
    "webhook.due": WebhookDue("msg_1", "endpoint-1", 3),
}


def test_every_message_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(MESSAGE_TYPES)
    assert all(type(EXAMPLES[name]) is MESSAGE_TYPES[name] for name in EXAMPLES)


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_every_message_type_round_trips_through_its_envelope(name: str) -> None:
    message = EXAMPLES[name]

    decoded = Envelope.decode(envelope(message).encode())

    assert (decoded.id, decoded.type, decoded.topic) == (message.id, name, message.TYPE.topic)
    assert decoded.key == message.partition_key
    assert read_message(decoded) == message


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_every_message_type_refuses_a_version_it_does_not_know(name: str) -> None:
    message = EXAMPLES[name]
    body = message.to_body()
    body["v"] = message.TYPE.version + 1
    newer = Envelope(message.id, message.TYPE.topic, message.partition_key, body, name)

    with pytest.raises(UnknownMessage, match=f"unsupported {name} message version"):
        read_message(newer)


def test_every_topic_is_one_beacon_knows() -> None:
    assert set(TOPICS) == {"events", "profiles", "segments", "journeys", "deliveries"}
    assert {kind.TYPE.topic for kind in MESSAGE_TYPES.values()} <= set(TOPICS)


def test_an_unknown_message_type_is_refused_naming_it_and_its_topic() -> None:
    stranger = Envelope("m-1", "segments", "profile-1", {"v": 1}, "segment.entered")

    with pytest.raises(UnknownMessage, match=r"unknown message type 'segment\.entered' on topic"):
        read_message(stranger)


def test_an_envelope_written_before_types_had_names_carries_an_event() -> None:
    message = make_event()
    raw = {"id": message.id, "topic": "events", "key": "profile-1", "body": message.to_body()}

    decoded = Envelope.decode(jsonio.dumps(raw))

    assert decoded.type == "event"
    assert read_message(decoded) == message


def test_a_message_type_must_name_a_known_topic_and_a_new_name() -> None:
    @dataclass(frozen=True)
    class Stray:
        TYPE: ClassVar[MessageType] = MessageType("stray", 1, "elsewhere")

    @dataclass(frozen=True)
    class Twin:
        TYPE: ClassVar[MessageType] = MessageType("event", 1, "events")

    with pytest.raises(ValueError, match="unknown topic 'elsewhere'"):
        declare(Stray)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="'event' is declared already"):
        declare(Twin)  # type: ignore[type-var]
