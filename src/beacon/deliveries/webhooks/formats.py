"""What an endpoint hears: the element an event becomes for it, and the body a batch makes.

- `esputnik`: a `message.*` system event becomes an eSputnik activity (`activity.Activity`,
  field for field as the reference lists); the body is a JSON array of them. An activity needs
  the contact's email: a message to someone with no known email address sends none.
- `events`: an event of a chosen type becomes `{"id", "type", "source_id", "profile_id",
  "occurred_at", "properties"}`; the body is a JSON array of them.
- `amplitude`: an event of a chosen type becomes an Amplitude event (`event_type`, `user_id`
  the profile id, `time` in milliseconds, `event_properties`, `insert_id` the event id, which
  Amplitude deduplicates on); the body is `{"api_key", "events": [...]}` (HTTP API v2).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from beacon import lifecycle
from beacon.bus.messages import EventMessage
from beacon.core import jsonio
from beacon.deliveries.activity import Activity, ActivityStatus
from beacon.deliveries.webhooks.endpoints import Endpoint

STATUS_OF: dict[str, ActivityStatus] = {
    lifecycle.MESSAGE_DELIVERED: "DELIVERED",
    lifecycle.MESSAGE_UNDELIVERED: "UNDELIVERED",
    lifecycle.MESSAGE_READ: "READ",
    lifecycle.MESSAGE_CLICKED: "CLICKED",
    lifecycle.MESSAGE_UNSUBSCRIBED: "UNSUBSCRIBED",
    lifecycle.MESSAGE_SPAM: "SPAM",
}


def element_for(endpoint: Endpoint, event: EventMessage) -> bytes | None:
    """Return the JSON element `event` is for `endpoint`, or None if it hears nothing of it."""
    if endpoint.format == "esputnik":
        activity = activity_of(event)
        if activity is None or activity.activity_status not in (
            endpoint.statuses or STATUS_OF.values()
        ):
            return None
        return jsonio.dumps(activity.to_json())
    if event.type not in endpoint.event_types:
        return None
    if endpoint.format == "events":
        return jsonio.dumps(
            {
                "id": event.id,
                "type": event.type,
                "source_id": event.source_id,
                "profile_id": event.profile_id,
                "occurred_at": event.occurred_at,
                "properties": event.properties,
            }
        )
    if event.profile_id is None:
        return None  # Amplitude needs a user id or device id
    return jsonio.dumps(
        {
            "event_type": event.type,
            "user_id": event.profile_id,
            "time": int(datetime.fromisoformat(event.occurred_at).timestamp() * 1000),
            "event_properties": event.properties,
            "insert_id": event.id,
        }
    )


def activity_of(event: EventMessage) -> Activity | None:
    """Return the activity a `message.*` system event tells, None for any other event (or one
    without an email address to tell it of)."""
    status = STATUS_OF.get(event.type)
    if status is None or event.source_id != lifecycle.SYSTEM_SOURCE:
        return None
    p = event.properties
    try:
        return Activity(
            contact_id=p["contactId"],
            email=p["email"],
            activity_status=status,
            message_id=p["messageId"],
            message_instance_id=p["messageInstanceId"],
            message_tag=p.get("messageTag"),
            activity_date_time=datetime.fromisoformat(event.occurred_at),
            status_description=p.get("statusDescription") if status == "UNDELIVERED" else None,
            view_message_link=p.get("viewMessageLink"),
            click_event_link=p.get("clickEventLink") if status == "CLICKED" else None,
        )
    except (KeyError, ValueError, TypeError):
        return None


def body_of(endpoint: Endpoint, elements: Sequence[bytes]) -> bytes:
    """Return the body of a batch of `elements` for `endpoint`."""
    array = b"[" + b",".join(elements) + b"]"
    if endpoint.format != "amplitude":
        return array
    api_key = jsonio.dumps(str(endpoint.options.get("api_key", "")))
    return b'{"api_key":' + api_key + b',"events":' + array + b"}"


def sample_body(endpoint: Endpoint, *, now: datetime) -> bytes:
    """Return a body of one made-up element, for a test send."""
    if endpoint.format == "esputnik":
        activity = Activity(
            contact_id=0,
            email="test@example.com",
            activity_status="DELIVERED",
            message_id=0,
            message_instance_id=0,
            message_tag="test",
            activity_date_time=now,
        )
        return body_of(endpoint, [jsonio.dumps(activity.to_json())])
    sample = EventMessage(
        id="test",
        type=min(endpoint.event_types) if endpoint.event_types else "test",
        source_id="test",
        profile_id="00000000-0000-7000-8000-000000000000",
        session_id=None,
        occurred_at=now.isoformat(),
        received_at=now.isoformat(),
        properties={"test": True},
    )
    element = element_for(endpoint, sample)
    return body_of(endpoint, [element] if element is not None else [])
