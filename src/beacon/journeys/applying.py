"""Applying a run's effects in the worker's transaction, through each owner's own write path.

A delivery request goes through messaging's `request_delivery` with the effect's idempotency
key (a journey's webhook step is a request on the `webhook` channel whose content holds url,
method, headers and body); trait updates through identity's `edit_traits` (which records
`profile.traits_changed`); an emitted event is a system event of the profile
(`lifecycle.record`) whose id derives from the idempotency key; timers through `timers.store`;
conversions in `journey_conversions`. Sends that caps count are returned for the ledger to
store with the run (`journey_sends`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beacon import lifecycle
from beacon.core import jsonio
from beacon.deliveries.requests import DeliveryRequest, request_delivery
from beacon.identity.actions import edit_traits
from beacon.identity.traits import TraitOp
from beacon.journeys import effects as fx
from beacon.journeys.process import RUN_TIMER
from beacon.storage.transaction import Tx
from beacon.timers import store as timers

_EMITTED = uuid.UUID("0b7e3c1a-5d2f-4e8b-9a61-c4f2d8e7b903")


@dataclass(frozen=True, slots=True)
class Send:
    """A message a journey asked for (what frequency caps count)."""

    idempotency_key: str
    profile_id: str
    channel: str
    journey: str
    sent_at: datetime


async def apply_effect(tx: Tx, effect: fx.Effect, *, journey: str) -> Send | None:
    """Apply one effect of a run of `journey` in `tx`; return the send it made, if any."""
    if isinstance(effect, fx.RequestDelivery):
        content = None if effect.content is None else dict(effect.content)
        return await deliver(
            tx,
            effect.profile_id,
            effect.channel,
            effect.idempotency_key,
            journey,
            effect.template,
            content,
            dict(effect.variables),
        )
    if isinstance(effect, fx.UpdateTraits):
        ops = [TraitOp("set", name, value) for name, value in effect.set.items()]
        ops += [TraitOp("increment", name, value) for name, value in effect.increment.items()]
        ops += [TraitOp("unset", name) for name in effect.unset]
        await edit_traits(tx, profile_id=effect.profile_id, ops=ops)
    elif isinstance(effect, fx.EmitEvent):
        event_id = str(uuid.uuid5(_EMITTED, effect.idempotency_key))
        emitted = lifecycle.SystemEvent(
            effect.type, effect.profile_id, dict(effect.properties), tx.now, id=event_id
        )
        await lifecycle.record(tx, [emitted])
    elif isinstance(effect, fx.ScheduleTimer):
        payload = {"run": effect.run_id}
        await timers.schedule(
            tx, key=effect.key, kind=RUN_TIMER, run_at=effect.run_at, payload=payload
        )
    elif isinstance(effect, fx.CancelTimer):
        await timers.cancel(tx, key=effect.key)
    elif isinstance(effect, fx.RecordConversion):
        await tx.sql.execute(
            "INSERT INTO journey_conversions (run_id, journey, profile_id, event_id,"
            " converted_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
            effect.run_id,
            effect.journey,
            effect.profile_id,
            effect.event_id,
            effect.converted_at,
        )
    # CallWebhook needs its run's profile (the ledger calls `deliver`); SendSkipped and RunEnded:
    # the run's state and path already say so.
    return None


async def deliver(
    tx: Tx,
    profile_id: str,
    channel: str,
    key: str,
    journey: str,
    template: str | None,
    content: dict[str, Any] | None,
    variables: dict[str, Any],
) -> Send | None:
    """Hand a message to messaging; the send to count, or None if the key was requested before."""
    request = DeliveryRequest(
        profile_id=profile_id,
        channel=channel,
        idempotency_key=key,
        requested_by=f"journey:{journey}",
        template=template,
        content=content,
        variables=variables,
    )
    if await request_delivery(tx, request) is None:
        return None
    return Send(key, profile_id, channel, journey, tx.now)


def webhook_content(effect: fx.CallWebhook) -> dict[str, Any]:
    return {
        "url": effect.url,
        "method": effect.method,
        "headers": dict(effect.headers),
        "body": jsonio.dumps_text(effect.body),
    }
