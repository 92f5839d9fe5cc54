"""Bus messages survive encoding exactly and refuse versions they do not know."""

from __future__ import annotations

import pytest

from beacon.bus.messages import EVENTS_TOPIC, Envelope, EventMessage, OutboxBatch


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


def test_outbox_batch_round_trips_every_envelope_in_order() -> None:
    envelopes = [make_event().envelope(), make_event(id="second", profile_id=None).envelope()]
    batch = OutboxBatch("row-1", envelopes)
    decoded = OutboxBatch.decode("row-1", batch.encode())
    assert decoded == batch
