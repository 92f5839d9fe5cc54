"""System events: what Beacon itself records about people, named and built in one place.

A system event is an ordinary event of its profile, stored under the built-in `system` source
(which clients cannot send as) and published on the `events` topic like any other, so the
event history shows it and every consumer can react to it. `record` does both in the caller's
transaction. The one exception is `profile.erased`: it is published (consumers must forget the
person) but not stored, since storing it would keep a row about someone who asked to be
forgotten; it carries the erased profile ids and nothing else about them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from beacon.bus.messages import EventMessage
from beacon.core.ids import new_id
from beacon.core.jsonio import dumps_text
from beacon.storage.transaction import Tx

SYSTEM_SOURCE = "system"

PROFILE_MERGED = "profile.merged"
"""`{"profile_id": survivor, "merged_profile_id": loser}`, on the survivor."""
PROFILE_TRAITS_CHANGED = "profile.traits_changed"
"""`{"changed": {name: {"from": old, "to": new}}}`: traits whose value changed (`to` absent when
unset)."""
PROFILE_CONSENT_CHANGED = "profile.consent_changed"
"""`{"channel", "granted", "source"}`: a consent decision that differs from the last one."""
PROFILE_ERASED = "profile.erased"
"""`{"profile_ids": [...]}` (the person and the profiles merged into them), published only."""
SEGMENT_ENTERED = "segment.entered"
"""`{"segment_id", "segment", "imported"}`: the profile now satisfies the segment's rule;
`imported` (also the event's own flag) when imported history caused it."""
SEGMENT_EXITED = "segment.exited"
"""`{"segment_id", "segment", "imported"}`: the profile no longer satisfies the rule."""

MESSAGE_DELIVERED = "message.delivered"
"""The channel took the message (an SMTP relay, a provider; the capture channel kept it). Its
properties are named as eSputnik's activity webhooks name them: `messageId`,
`messageInstanceId`, `messageTag`, `contactId`, `email` (when known), `viewMessageLink`, and
`channel`, `deliveryId`."""
MESSAGE_UNDELIVERED = "message.undelivered"
"""It failed for good, was given up after its last attempt, or bounced: the same properties
with `statusDescription`, the reason."""
MESSAGE_READ = "message.read"
"""It was opened (its pixel loaded), once per message: the same properties."""
MESSAGE_CLICKED = "message.clicked"
"""A link in it was followed: the same properties with `clickEventLink`, the link."""
MESSAGE_UNSUBSCRIBED = "message.unsubscribed"
"""Its recipient unsubscribed through it (a page, one click): the same properties."""
MESSAGE_SPAM = "message.spam"
"""Its recipient reported it as spam: the same properties."""
MESSAGE_EVENTS = (
    MESSAGE_DELIVERED,
    MESSAGE_UNDELIVERED,
    MESSAGE_READ,
    MESSAGE_CLICKED,
    MESSAGE_UNSUBSCRIBED,
    MESSAGE_SPAM,
)
WEBHOOK_ENDPOINT_DISABLED = "webhook.endpoint_disabled"
"""`{"endpoint_id", "url", "reason"}`: Beacon stopped sending to a webhook endpoint (410 Gone,
or failing for days); it belongs to no profile."""

SYSTEM_CONTEXT = {"system": True}

INSERT_EVENT = (
    "INSERT INTO events (id, occurred_at, received_at, type, source_id, profile_id, session_id,"
    " external_id, properties, context, valid, errors, imported)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, NULL, ?)"
)


@dataclass(frozen=True, slots=True)
class SystemEvent:
    """One event Beacon records itself."""

    type: str
    profile_id: str | None  # None: about no one (a webhook endpoint disabled)
    properties: dict[str, Any]
    occurred_at: datetime
    imported: bool = False  # caused by imported history: automations must not start from it
    id: str = field(default_factory=new_id)

    def message(self, received_at: datetime, *, stored: bool = True) -> EventMessage:
        return EventMessage(
            id=self.id,
            type=self.type,
            source_id=SYSTEM_SOURCE,
            profile_id=self.profile_id,
            session_id=None,
            occurred_at=self.occurred_at.isoformat(),
            received_at=received_at.isoformat(),
            properties=self.properties,
            context=SYSTEM_CONTEXT,
            stored=stored,
            imported=self.imported,
        )


def profile_merged(loser: str, survivor: str, at: datetime, *, imported: bool) -> SystemEvent:
    return SystemEvent(
        PROFILE_MERGED,
        survivor,
        {"profile_id": survivor, "merged_profile_id": loser},
        at,
        imported=imported,
    )


def traits_changed(
    profile_id: str, before: dict[str, Any], after: dict[str, Any], at: datetime
) -> SystemEvent | None:
    """The event for a trait edit, or None if no value changed."""
    changed: dict[str, dict[str, Any]] = {}
    for name in sorted(before.keys() | after.keys()):
        if name in after and (name not in before or before[name] != after[name]):
            changed[name] = {"from": before.get(name), "to": after[name]}
        elif name not in after:
            changed[name] = {"from": before[name]}
    if not changed:
        return None
    return SystemEvent(PROFILE_TRAITS_CHANGED, profile_id, {"changed": changed}, at)


def consent_changed(
    profile_id: str, channel: str, granted: bool, source: str, at: datetime
) -> SystemEvent:
    return SystemEvent(
        PROFILE_CONSENT_CHANGED,
        profile_id,
        {"channel": channel, "granted": granted, "source": source},
        at,
    )


def segment_changed(
    change: str,
    profile_id: str,
    *,
    segment_id: str,
    segment: str,
    at: datetime,
    imported: bool,
    event_id: str | None = None,
) -> SystemEvent:
    """`segment.entered` (`change` "entered") or `segment.exited` ("exited") of a profile."""
    kind = {"entered": SEGMENT_ENTERED, "exited": SEGMENT_EXITED}[change]
    properties = {"segment_id": segment_id, "segment": segment, "imported": imported}
    if event_id is None:
        return SystemEvent(kind, profile_id, properties, at, imported=imported)
    return SystemEvent(kind, profile_id, properties, at, imported=imported, id=event_id)


def message_activity(
    kind: str, profile_id: str, properties: dict[str, Any], at: datetime
) -> SystemEvent:
    """One of `MESSAGE_EVENTS` (`kind`) on the profile a message was sent to."""
    if kind not in MESSAGE_EVENTS:
        raise ValueError(f"{kind!r} is not a message event ({', '.join(MESSAGE_EVENTS)})")
    return SystemEvent(kind, profile_id, properties, at)


def endpoint_disabled(endpoint_id: str, url: str, reason: str, at: datetime) -> SystemEvent:
    return SystemEvent(
        WEBHOOK_ENDPOINT_DISABLED,
        None,
        {"endpoint_id": endpoint_id, "url": url, "reason": reason},
        at,
    )


def profile_erased(profile_ids: Sequence[str], at: datetime) -> SystemEvent:
    survivor = profile_ids[0]
    return SystemEvent(PROFILE_ERASED, survivor, {"profile_ids": list(profile_ids)}, at)


async def record(tx: Tx, events: Sequence[SystemEvent]) -> None:
    """Store `events` as events of their profiles and publish them once `tx` commits."""
    if not events:
        return
    await tx.sql.executemany(
        INSERT_EVENT,
        [
            (
                e.id,
                e.occurred_at,
                tx.now,
                e.type,
                SYSTEM_SOURCE,
                e.profile_id,
                None,
                dumps_text(e.properties),
                dumps_text(SYSTEM_CONTEXT),
                True,
                e.imported,
            )
            for e in events
        ],
    )
    tx.enqueue(e.message(tx.now).envelope() for e in events)


def publish_only(tx: Tx, event: SystemEvent) -> None:
    """Publish `event` once `tx` commits, without storing it (`profile.erased`)."""
    tx.enqueue([event.message(tx.now, stored=False).envelope()])
