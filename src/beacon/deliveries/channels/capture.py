"""The capture channel: sends nothing, and answers with what would have gone out.

It is the default on the embedded set-up, so a journey can be built and watched before any
provider is configured: the delivery log keeps the rendered parts and the recipient (never a
webhook's secrets or a push subscription's keys).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from beacon.deliveries.channels.base import (
    ChannelSpec,
    Outcome,
    PushSubscription,
    Recipient,
    SendResult,
    WebhookEndpoint,
)
from beacon.deliveries.channels.registry import ChannelServices
from beacon.deliveries.templates import CHANNEL_KINDS, Rendered

SPEC = ChannelSpec(
    name="capture",
    description="Sends nothing: keeps what would have gone out in the delivery log",
    kinds=CHANNEL_KINDS,
    recipient="any recipient",
)


class CaptureChannel:
    """Answers every send with its rendered content, sending nothing."""

    spec = SPEC

    async def send(self, rendered: Rendered, recipient: Recipient) -> SendResult:
        """Return the rendered message as the result."""
        return SendResult(
            outcome=Outcome.ACCEPTED,
            provider_id=f"capture:{rendered.delivery_id}",
            description=f"captured, not sent: a {rendered.channel} message",
            captured={
                "channel": rendered.channel,
                "delivery_id": rendered.delivery_id,
                "recipient": describe_recipient(recipient),
                "parts": dict(rendered.parts),
            },
        )


def describe_recipient(recipient: Recipient) -> dict[str, Any]:
    """Return the recipient as the log may show it: without secrets or encryption keys."""
    if isinstance(recipient, WebhookEndpoint):
        return {"kind": "webhook_endpoint", "url": recipient.url}
    if isinstance(recipient, PushSubscription):
        return {"kind": "push_subscription", "endpoint": recipient.endpoint}
    kind = type(recipient).__name__
    return {"kind": kind, **dataclasses.asdict(recipient)}


def create(settings: Mapping[str, Any], services: ChannelServices) -> CaptureChannel:
    """Return the capture channel; it has no settings."""
    if settings:
        raise ValueError(f"capture settings: unknown setting {sorted(settings)[0]!r}")
    return CaptureChannel()
