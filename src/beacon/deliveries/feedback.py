"""What happens to a message after it left, recorded once each: the system events on the
profile (`message.*`, see `lifecycle`), the instance's timeline, and the suppression list.

Every `message.*` event carries the activity fields eSputnik's webhooks send, so the activity
collector (`webhooks.collect`) and anyone else reading the events needs nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from beacon import lifecycle
from beacon.deliveries import instances, suppression
from beacon.deliveries.instances import Instance
from beacon.deliveries.links import LinkSigner
from beacon.identity.actions import identity_of, resolve_profiles
from beacon.storage.transaction import Tx

Kind = Literal["delivered", "undelivered", "read", "clicked", "unsubscribed", "spam"]
ADDRESS_KIND = {"email": "email", "sms": "phone"}
SMS_FAILED = frozenset({"undelivered", "failed"})  # Twilio's MessageStatus of a lost SMS
# Twilio's error codes that say the number can never receive: not a number, not a mobile,
# unknown to its carrier; 21610, the person replied STOP.
SMS_NUMBER_GONE = frozenset({"21211", "21614", "30005", "30006"})
SMS_STOPPED = "21610"


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """A bounce or a complaint about a message (or only an address), from a mail provider."""

    type: Literal["bounce", "complaint"]
    email: str
    delivery_id: str | None = None
    permanent: bool = True
    description: str | None = None


async def record_activity(
    tx: Tx,
    instance: Instance,
    kind: Kind,
    *,
    signer: LinkSigner,
    extra: dict[str, Any] | None = None,
) -> bool:
    """Record `message.<kind>` on the instance's profile (its merge survivor); False if the
    profile is gone (erased)."""
    survivors = await resolve_profiles(tx.sql, [instance.profile_id])
    profile_id = survivors.get(instance.profile_id)
    if profile_id is None:
        return False
    email = instance.recipient if instance.kind == "email" else None
    if email is None:
        email = await identity_of(tx.sql, profile_id, "email")
    properties: dict[str, Any] = {
        "messageId": instance.message_id,
        "messageInstanceId": instance.id,
        "messageTag": instance.tag,
        "contactId": instance.contact_id,
        "email": email,
        "channel": instance.kind,
        "deliveryId": instance.delivery_id,
        "viewMessageLink": view_link(instance, signer),
        **(extra or {}),
    }
    event = lifecycle.message_activity(f"message.{kind}", profile_id, properties, tx.now)
    await lifecycle.record(tx, [event])
    return True


def view_link(instance: Instance, signer: LinkSigner) -> str | None:
    """The message's view-online page: emails have one."""
    if instance.kind != "email":
        return None
    return signer.url(purpose="view", delivery_id=instance.delivery_id)


async def record_open(tx: Tx, *, delivery_id: str, signer: LinkSigner) -> bool:
    """Record the first opening of a message (`message.read`); later ones change nothing."""
    instance = await instances.load_instance(tx.sql, delivery_id)
    if instance is None or not await instances.mark_once(tx, instance.id, "read_at"):
        return False
    await instances.add_timeline(tx, instance.id, "read")
    return await record_activity(tx, instance, "read", signer=signer)


async def record_click(tx: Tx, *, delivery_id: str, link: str, signer: LinkSigner) -> bool:
    """Record a followed link (`message.clicked` with `clickEventLink`), every time."""
    instance = await instances.load_instance(tx.sql, delivery_id)
    if instance is None:
        return False
    await instances.add_timeline(tx, instance.id, "clicked", detail=link)
    extra = {"clickEventLink": link}
    return await record_activity(tx, instance, "clicked", signer=signer, extra=extra)


async def record_unsubscribe(tx: Tx, *, delivery_id: str, signer: LinkSigner, how: str) -> bool:
    """Unsubscribe the message's recipient: the address is suppressed and, the first time,
    `message.unsubscribed` recorded. False if the message is unknown."""
    instance = await instances.load_instance(tx.sql, delivery_id)
    if instance is None:
        return False
    address_kind = ADDRESS_KIND.get(instance.kind)
    if address_kind is not None and instance.recipient:
        await suppression.suppress(
            tx,
            kind=address_kind,
            address=instance.recipient,
            reason="unsubscribed",
            detail=how,
            delivery_id=delivery_id,
        )
    if await instances.mark_once(tx, instance.id, "unsubscribed_at"):
        await instances.add_timeline(tx, instance.id, "unsubscribed", detail=how)
        await record_activity(tx, instance, "unsubscribed", signer=signer)
    return True


async def record_report(tx: Tx, *, report: Report, signer: LinkSigner) -> str:
    """Apply a bounce or complaint: suppress the address (a permanent bounce, a complaint) and
    record `message.undelivered` or `message.spam` on the message it names; say what was done."""
    instance = None
    if report.delivery_id is not None:
        instance = await instances.load_instance(tx.sql, report.delivery_id)
    if report.type == "complaint" or report.permanent:
        reason: suppression.Reason = "complained" if report.type == "complaint" else "bounced"
        await suppression.suppress(
            tx,
            kind="email",
            address=report.email,
            reason=reason,
            detail=report.description,
            delivery_id=report.delivery_id,
        )
    if instance is None:
        return "suppressed" if report.type == "complaint" or report.permanent else "ignored"
    if report.type == "complaint":
        await instances.add_timeline(tx, instance.id, "spam", detail=report.description)
        await record_activity(tx, instance, "spam", signer=signer)
        return "recorded"
    description = report.description or ("bounced" if report.permanent else "soft bounce")
    status = "bounced" if report.permanent else "soft_bounced"
    await instances.add_timeline(tx, instance.id, status, detail=description)
    if report.permanent:
        await instances.set_status(
            tx, instance.id, status="bounced", reason=description, when="sent"
        )
    extra = {"statusDescription": description}
    await record_activity(tx, instance, "undelivered", signer=signer, extra=extra)
    return "recorded"


async def record_sms_status(
    tx: Tx, *, delivery_id: str, status: str, error_code: str | None, signer: LinkSigner
) -> str:
    """Apply the carrier's report on an SMS (Twilio's `MessageStatus` and `ErrorCode`): its
    arrival is added to the timeline; a loss records `message.undelivered` with the reason,
    once, and a number that can never receive (or that replied STOP) is suppressed. Returns
    what was done."""
    instance = await instances.load_instance(tx.sql, delivery_id)
    if instance is None or instance.kind != "sms":
        return "unknown"
    if status == "delivered":
        await instances.add_timeline(tx, instance.id, "handset_delivered")
        return "recorded"
    if status not in SMS_FAILED:
        return "ignored"  # queued, sending, sent...: nothing new to the person
    if instance.status == "bounced":
        return "duplicate"
    description = status if error_code is None else f"{status}: Twilio error {error_code}"
    await instances.add_timeline(tx, instance.id, "bounced", detail=description)
    await instances.set_status(tx, instance.id, status="bounced", reason=description, when="sent")
    if instance.recipient and error_code in SMS_NUMBER_GONE | {SMS_STOPPED}:
        await suppression.suppress(
            tx,
            kind="phone",
            address=instance.recipient,
            reason="unsubscribed" if error_code == SMS_STOPPED else "bounced",
            detail=description,
            delivery_id=delivery_id,
        )
    extra = {"statusDescription": description}
    await record_activity(tx, instance, "undelivered", signer=signer, extra=extra)
    return "recorded"
