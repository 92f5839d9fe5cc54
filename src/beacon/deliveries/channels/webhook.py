"""Webhooks: a rendered JSON body posted to a customer's URL, signed per Standard Webhooks.

The URL is the customer's, so the post goes through the outbound checks (no internal
addresses, redirects checked too). `webhook-id` is the delivery id, the same on every retry;
the timestamp and signatures are made per attempt (an endpoint without secrets, a journey's
call of a URL of its own, is not signed). 2xx is accepted; 410 Gone fails for good;
every other answer, and no answer, fails for now and the retry policy decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from beacon.core.clock import Clock
from beacon.deliveries.channels.answers import result_of, result_of_error
from beacon.deliveries.channels.base import (
    ChannelSpec,
    Recipient,
    SendResult,
    WebhookEndpoint,
    mismatch,
)
from beacon.deliveries.channels.registry import ChannelServices
from beacon.deliveries.outbound import OutboundError, OutboundHttp
from beacon.deliveries.signing import WebhookSigner
from beacon.deliveries.templates import Rendered

# Everything but 410 is worth another try: receivers are often down, misrouted or redeploying.
RETRIED_STATUSES = frozenset(range(400, 500)) - {410}

SPEC = ChannelSpec(
    name="webhook",
    description="A signed JSON POST (Standard Webhooks) to a customer's URL",
    kinds=("webhook",),
    recipient="a webhook endpoint: its URL and whsec_ signing secrets",
)


class WebhookChannel:
    """Posts signed JSON to customers' endpoints."""

    spec = SPEC

    def __init__(self, *, outbound: OutboundHttp, clock: Clock) -> None:
        self._outbound = outbound
        self._clock = clock

    async def send(self, rendered: Rendered, recipient: Recipient) -> SendResult:
        """Sign the body for this attempt and post it."""
        wrong = mismatch(SPEC, rendered, recipient, WebhookEndpoint)
        if wrong:
            return SendResult.permanent(wrong)
        assert isinstance(recipient, WebhookEndpoint)
        body = rendered.parts["body"].encode()
        signed = {"webhook-id": rendered.delivery_id}
        if recipient.secrets:
            try:
                signer = WebhookSigner(secrets=recipient.secrets)
            except ValueError as error:
                return SendResult.permanent(f"the endpoint cannot be signed for: {error}")
            signed = signer.headers(
                webhook_id=rendered.delivery_id, timestamp=self._clock.now(), body=body
            )
        # The endpoint's own headers first: they cannot replace the signature or the type.
        headers = {**recipient.headers, **signed, "Content-Type": "application/json"}
        try:
            response = await self._outbound.post(recipient.url, content=body, headers=headers)
        except OutboundError as error:
            return result_of_error(error)
        return result_of(response, temporary=RETRIED_STATUSES)


def create(settings: Mapping[str, Any], services: ChannelServices) -> WebhookChannel:
    """Return the webhook channel; it has no settings (each endpoint brings its own)."""
    if settings:
        raise ValueError(f"webhook settings: unknown setting {sorted(settings)[0]!r}")
    return WebhookChannel(outbound=services.outbound, clock=services.clock)
