"""Getting one delivery ready to send, in the transaction that claims its attempt.

For a delivery request (or a retry that came due): the message it sends as and its instance;
then, before each attempt, who receives it (the profile's address for the kind), whether it may
be sent (suppression list, consent, unless transactional), and its content: rendered once, at
the first attempt, and kept, so every retry sends exactly the same message. A failure here (no
such template, a value missing at render time) fails the delivery visibly; a skip records why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from beacon.core.sql import Sql
from beacon.deliveries import contacts, instances, library, recipients, suppression
from beacon.deliveries.channels.base import Recipient
from beacon.deliveries.feedback import record_activity
from beacon.deliveries.instances import Instance
from beacon.deliveries.leases import abandoned, lease_until
from beacon.deliveries.outlets import Outlets
from beacon.deliveries.retry import RetryPolicy
from beacon.deliveries.templates import (
    CHANNEL_KINDS,
    ChannelKind,
    EventView,
    InvalidTemplate,
    MessageView,
    ProfileView,
    Rendered,
    RenderError,
    Template,
    TemplateVariables,
    render,
)
from beacon.deliveries.tracking import add_open_pixel, track_clicks
from beacon.identity.actions import db_json, db_time, load_profile, resolve_profiles
from beacon.storage.transaction import Tx


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """A delivery request as `request_delivery` stored it."""

    id: str
    profile_id: str
    channel: str
    template: str | None
    content: dict[str, Any] | None
    variables: dict[str, Any]
    requested_by: str
    message_id: int | None


@dataclass(frozen=True, slots=True)
class Ready:
    """A claimed attempt: the instance as claimed, what to send, and to whom."""

    instance: Instance
    rendered: Rendered
    recipient: Recipient


@dataclass(frozen=True, slots=True)
class Busy:
    """An attempt another live process is making now."""

    delivery_id: str
    owner: str


async def load_request(sql: Sql, request_id: str) -> StoredRequest | None:
    """Return the stored delivery request `request_id`, or None."""
    rows = await sql.fetch(
        "SELECT id, profile_id, channel, template, content, variables, requested_by, message_id"
        " FROM delivery_requests WHERE id = ?",
        request_id,
    )
    if not rows:
        return None
    row = rows[0]
    content, variables = db_json(row[4]), db_json(row[5])
    return StoredRequest(
        id=str(row[0]),
        profile_id=str(row[1]),
        channel=str(row[2]),
        template=row[3],
        content=content if isinstance(content, dict) else None,
        variables=variables if isinstance(variables, dict) else {},
        requested_by=str(row[6]),
        message_id=None if row[7] is None else int(row[7]),
    )


class Preparer:
    """Claims attempts for one process: `process_id` marks its claims, `in_flight` holds the
    deliveries it is sending right now."""

    def __init__(
        self, *, outlets: Outlets, process_id: str, heartbeat_seconds: float, in_flight: set[str]
    ) -> None:
        self._outlets = outlets
        self._me = process_id
        self._heartbeat = heartbeat_seconds
        self._in_flight = in_flight

    async def for_request(self, tx: Tx, request_id: str) -> Ready | Busy | None:
        """Make the first attempt of a request's delivery (None: nothing to do)."""
        request = await load_request(tx.sql, request_id)
        if request is None:
            return None
        kind = await _kind_of(tx.sql, request)
        message = (
            None
            if request.message_id is None
            else await library.load_message(tx.sql, request.message_id)
        )
        if message is None:
            message = await library.message_for(
                tx,
                requested_by=request.requested_by,
                template=request.template,
                content=request.content,
                kind=kind,
            )
        instance = await instances.create_instance(
            tx,
            delivery_id=request.id,
            message=message,
            profile_id=request.profile_id,
            kind=kind,
            channel=self._outlets.channel_for(request.channel, kind),
            policy=RetryPolicy(),
        )
        first = instance.status == "queued" or (
            instance.status == "sending" and instance.attempts == 1
        )
        return await self._attempt(tx, instance, request) if first else None

    async def for_retry(self, tx: Tx, delivery_id: str, attempt: int) -> Ready | Busy | None:
        """Make attempt number `attempt` of a delivery, if it is still the one due."""
        instance = await instances.load_instance(tx.sql, delivery_id)
        if instance is None:
            return None
        due = (instance.status == "retrying" and instance.attempts == attempt - 1) or (
            instance.status == "sending" and instance.attempts == attempt
        )
        request = await load_request(tx.sql, delivery_id) if due else None
        return None if request is None else await self._attempt(tx, instance, request)

    async def _attempt(
        self, tx: Tx, instance: Instance, request: StoredRequest
    ) -> Ready | Busy | None:
        if instance.status == "sending":
            taken = await abandoned(
                tx.sql,
                owner=instance.sending_by,
                until=instance.sending_until,
                me=self._me,
                in_flight=instance.delivery_id in self._in_flight,
                heartbeat_seconds=self._heartbeat,
            )
            if taken is None:
                return None
            if not taken:
                return Busy(instance.delivery_id, str(instance.sending_by))
        survivors = await resolve_profiles(tx.sql, [instance.profile_id])
        profile = await load_profile(tx.sql, survivors.get(instance.profile_id, ""))
        if profile is None:
            await instances.settle(tx, instance, status="failed", reason="the profile is gone")
            return None
        identities = await recipients.identities_of(tx.sql, profile.id)
        found = await recipients.recipient_for(
            tx.sql,
            kind=instance.kind,
            channel=instance.channel,
            traits=profile.traits,
            identities=identities,
            context=_mapping(request.variables.get("context")),
            content=request.content,
        )
        if isinstance(found, str):
            await instances.settle(tx, instance, status="skipped", reason=found)
            return None
        recipient, address = found
        instance = replace(instance, recipient=address or instance.recipient)
        address_kind = recipients.ADDRESS_KINDS.get(instance.kind)
        if address_kind is not None and address is not None:
            reason = await suppression.suppression_of(tx.sql, kind=address_kind, address=address)
            if reason is not None and not (
                instance.transactional and reason in suppression.TRANSACTIONAL_IGNORES
            ):
                skipped = f"suppressed: {address} {reason}"
                await instances.settle(tx, instance, status="skipped", reason=skipped)
                return None
        if not instance.transactional:
            problem = await suppression.consent_problem(
                tx.sql, profile_id=profile.id, kind=instance.kind, consents=profile.consents
            )
            if problem is not None:
                await instances.settle(tx, instance, status="skipped", reason=problem)
                return None
        contact_id = await contacts.contact_id(tx, profile_id=profile.id)
        content = instance.content
        if content is None:
            made = await self._render(tx, instance, request, profile.id, profile.traits, identities)
            if isinstance(made, str):
                failed = replace(instance, contact_id=contact_id, recipient=address)
                await instances.settle(tx, failed, status="failed", reason=made)
                extra = {"statusDescription": made}
                await record_activity(
                    tx, failed, "undelivered", signer=self._outlets.signer, extra=extra
                )
                return None
            content = made
        claimed = await instances.claim_attempt(
            tx,
            instance,
            by=self._me,
            until=lease_until(),
            recipient=address,
            contact_id=contact_id,
            content=content,
        )
        if claimed is None:
            return None
        rendered = Rendered(
            channel=claimed.kind,
            parts=content["parts"],
            delivery_id=claimed.delivery_id,
            one_click_unsubscribe_url=content.get("one_click_unsubscribe_url"),
        )
        return Ready(claimed, rendered, recipient)

    async def _render(
        self,
        tx: Tx,
        instance: Instance,
        request: StoredRequest,
        profile_id: str,
        traits: Mapping[str, Any],
        identities: Mapping[str, str],
    ) -> dict[str, Any] | str:
        """Return the content to send, or why it cannot be made."""
        template: Template | None
        try:
            if request.template is not None:
                template = await library.load_template(tx.sql, request.template)
                if template is None:
                    return f"there is no template named {request.template!r}"
            else:
                raw = library.template_content(instance.kind, request.content or {})
                template = library.compiled(raw)
        except InvalidTemplate as error:
            return f"the message's content does not check: {error}"
        signer = self._outlets.signer
        links = signer.message_links(delivery_id=instance.delivery_id)
        variables = request.variables
        profile_vars = _mapping(variables.get("profile"))
        view = TemplateVariables(
            profile=ProfileView(
                id=profile_id,
                traits=traits,
                attributes=_mapping(profile_vars.get("attributes")),
                identities=identities,
            ),
            message=MessageView(
                id=str(instance.message_id),
                delivery_id=instance.delivery_id,
                tag=instance.tag,
                view_online_url=links.view_online_url if instance.kind == "email" else None,
                unsubscribe_url=links.unsubscribe_url,
                one_click_unsubscribe_url=(
                    links.one_click_unsubscribe_url if instance.kind == "email" else None
                ),
            ),
            event=_event(variables.get("event")),
            context=_mapping(variables.get("context")),
        )
        try:
            rendered = render(template, channel=instance.kind, variables=view)
        except RenderError as error:
            return f"the message could not be rendered: {error}"
        parts = dict(rendered.parts)
        if "html" in parts:
            keep = (links.view_online_url, links.unsubscribe_url)
            parts["html"] = add_open_pixel(
                track_clicks(
                    parts["html"], signer=signer, delivery_id=instance.delivery_id, keep=keep
                ),
                pixel_url=links.open_pixel_url,
            )
        return {"parts": parts, "one_click_unsubscribe_url": rendered.one_click_unsubscribe_url}


async def _kind_of(sql: Sql, request: StoredRequest) -> ChannelKind:
    """The kind of message a request sends: its channel, or (asked on "capture") what its
    template or content holds."""
    if request.channel in CHANNEL_KINDS:
        return request.channel
    if request.template is not None:
        template = await library.load_template(sql, request.template)
        if template is not None and template.sources:
            return next(k for k in CHANNEL_KINDS if k in template.sources)
    content = request.content or {}
    for kind in CHANNEL_KINDS:
        if kind in content:
            return kind
    if "subject" in content or "html" in content:
        return "email"
    if "title" in content:
        return "push"
    return "webhook" if "body" in content else "sms"


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _event(value: Any) -> EventView | None:
    if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
        return None
    time = value.get("time")
    return EventView(
        type=value["type"],
        id=value.get("id") if isinstance(value.get("id"), str) else None,
        time=db_time(time) if isinstance(time, str) else None,
        properties=_mapping(value.get("properties")),
    )
