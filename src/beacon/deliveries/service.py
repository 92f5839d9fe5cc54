"""Messaging's actions for the admin API: a transactional send to one person, and previews.

`send_message` turns `POST /api/messages/{id}/send` into a delivery request (`requests`), in
the caller's transaction: the person is found by any identity (an unknown email address gets
a new profile: an order confirmation to a guest), the request's idempotency key is the
message and the caller's key, so a back-end retrying its call sends once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from beacon.core.ids import new_id
from beacon.deliveries import library
from beacon.deliveries.links import LinkSigner
from beacon.deliveries.requests import DeliveryRequest, request_delivery
from beacon.deliveries.templates import (
    ChannelKind,
    EventView,
    MessageView,
    ProfileView,
    Rendered,
    Template,
    TemplateVariables,
    render,
)
from beacon.deliveries.tracking import add_open_pixel, track_clicks
from beacon.identity.actions import attach, create_profile, owner_of, resolve_profiles
from beacon.storage.transaction import Tx

PREVIEW_DELIVERY = "preview"
SAMPLE_PROFILE = ProfileView(
    id="sample-profile",
    traits={"first_name": "Ann", "last_name": "Example", "email": "ann@example.com"},
    identities={"email": "ann@example.com", "user_id": "sample-user"},
)


class NotFound(LookupError):
    """What the call names does not exist; the text says what."""


@dataclass(frozen=True, slots=True)
class Sent:
    """A send's delivery request: new, or the one an earlier call with the same key made."""

    delivery_id: str
    profile_id: str
    duplicate: bool


async def send_message(
    tx: Tx,
    *,
    message_id: int,
    to: tuple[str, str],
    params: Mapping[str, Any],
    event: Mapping[str, Any] | None,
    idempotency_key: str | None,
) -> Sent:
    """Ask for message `message_id` to be sent to the person `to` names ((kind, value))."""
    message = await library.load_message(tx.sql, message_id)
    if message is None:
        raise NotFound(f"there is no message {message_id}")
    if message.template is None:
        raise NotFound(f"message {message_id} has no template: it is sent by its journey only")
    profile_id = await _person(tx, *to)
    key = f"api:{message_id}:{idempotency_key or new_id()}"
    variables: dict[str, Any] = {"context": dict(params)}
    if event is not None:
        variables["event"] = dict(event)
    request = DeliveryRequest(
        profile_id=profile_id,
        channel=message.channel,
        idempotency_key=key,
        requested_by="api",
        template=message.template,
        variables=variables,
        message_id=message.id,
    )
    created = await request_delivery(tx, request)
    if created is not None:
        return Sent(created, profile_id, duplicate=False)
    rows = await tx.sql.fetch(
        "SELECT id, profile_id FROM delivery_requests WHERE idempotency_key = ?", key
    )
    return Sent(str(rows[0][0]), str(rows[0][1]), duplicate=True)


async def _person(tx: Tx, kind: str, value: str) -> str:
    """Return the profile `kind` `value` names (a merged one's survivor); an unknown email
    address gets a new profile."""
    if kind == "profile_id":
        found = (await resolve_profiles(tx.sql, [value])).get(value)
        if found is None:
            raise NotFound(f"there is no profile {value!r}")
        return found
    if kind == "email":
        value = value.strip().lower()
    owner = await owner_of(tx.sql, kind, value)
    if owner is not None:
        return (await resolve_profiles(tx.sql, [owner])).get(owner, owner)
    if kind != "email":
        raise NotFound(f"no profile has {kind} {value!r}")
    profile_id = new_id()
    await create_profile(tx.sql, profile_id=profile_id, now=tx.now)
    await attach(tx.sql, "email", value, profile_id=profile_id, now=tx.now)
    return profile_id


def preview(
    template: Template,
    *,
    kind: ChannelKind,
    profile: ProfileView,
    event: EventView | None,
    context: Mapping[str, Any],
    signer: LinkSigner,
) -> Rendered:
    """Render `template` as a send to `profile` would, links and tracking included (the links
    name no delivery); `RenderError` says what is missing."""
    links = signer.message_links(delivery_id=PREVIEW_DELIVERY)
    variables = TemplateVariables(
        profile=profile,
        message=MessageView(
            id="0",
            delivery_id=PREVIEW_DELIVERY,
            view_online_url=links.view_online_url,
            unsubscribe_url=links.unsubscribe_url,
            one_click_unsubscribe_url=links.one_click_unsubscribe_url,
        ),
        event=event,
        context=context,
    )
    rendered = render(template, channel=kind, variables=variables)
    parts = dict(rendered.parts)
    if "html" in parts:
        keep = (links.view_online_url, links.unsubscribe_url)
        tracked = track_clicks(
            parts["html"], signer=signer, delivery_id=PREVIEW_DELIVERY, keep=keep
        )
        parts["html"] = add_open_pixel(tracked, pixel_url=links.open_pixel_url)
    return Rendered(
        channel=kind,
        parts=parts,
        delivery_id=PREVIEW_DELIVERY,
        one_click_unsubscribe_url=rendered.one_click_unsubscribe_url,
    )
