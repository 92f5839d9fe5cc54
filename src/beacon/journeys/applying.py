"""Applying a run's effects in the worker's transaction, through each owner's own write path.

A send becomes messaging's delivery request with the effect's idempotency key
(`delivery_request`: a journey's webhook step is a request on the `webhook` channel whose
content holds url, method, headers and body), which the ledger stores a batch at a time;
trait updates go through identity's `edit_traits` (which records `profile.traits_changed`);
an emitted event is a system event of the profile
(`lifecycle.record`) whose id derives from the idempotency key; timers through `timers.store`;
conversions in `journey_conversions`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beacon import lifecycle
from beacon.core import jsonio
from beacon.deliveries.requests import DeliveryRequest
from beacon.identity.actions import edit_traits
from beacon.identity.traits import TraitOp
from beacon.journeys import effects as fx
from beacon.journeys.process import RUN_TIMER
from beacon.journeys.runs import Run
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


def delivery_request(effect: fx.Effect, run: Run) -> DeliveryRequest | None:
    """The delivery request a send or webhook effect of `run` makes, else None."""
    if isinstance(effect, fx.RequestDelivery):
        content = None if effect.content is None else dict(effect.content)
        channel, template, variables = effect.channel, effect.template, dict(effect.variables)
    elif isinstance(effect, fx.CallWebhook):
        channel, template, content, variables = "webhook", None, webhook_content(effect), {}
    else:
        return None
    return DeliveryRequest(
        profile_id=run.profile_id,
        channel=channel,
        idempotency_key=effect.idempotency_key,
        requested_by=f"journey:{run.journey}",
        template=template,
        content=content,
        variables=variables,
    )


async def apply_effect(tx: Tx, effect: fx.Effect) -> None:
    """Apply one effect other than a delivery request (`delivery_request`) in `tx`."""
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
    # SendSkipped and RunEnded: the run's state and path already say so.


def webhook_content(effect: fx.CallWebhook) -> dict[str, Any]:
    return {
        "url": effect.url,
        "method": effect.method,
        "headers": dict(effect.headers),
        "body": jsonio.dumps_text(effect.body),
    }
