"""Web Push to a local push service: the payload decrypts with the browser's keys; VAPID holds."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import http_ece  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02  # type: ignore[import-untyped]

from beacon.core.clock import FrozenClock
from beacon.deliveries.channels.base import Outcome, PushSubscription
from beacon.deliveries.channels.push import WebPushChannel, WebPushSettings
from beacon.deliveries.outbound import LOOPBACK, OutboundHttp, OutboundPolicy
from beacon.deliveries.templates import Rendered
from tests.integration.test_delivery_outbound import Receiver, running_receiver

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PUSH = Rendered(
    channel="push",
    parts={"title": "Kettle is back", "body": "10% off today", "url": "https://shop.test/k"},
    delivery_id="d-push",
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Browser:
    """What a browser keeps of its subscription: the private key and the auth secret."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = b"0123456789abcdef"

    def subscription(self, endpoint: str) -> PushSubscription:
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return PushSubscription.from_json(
            {"endpoint": endpoint, "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)}}
        )

    def decrypt(self, body: bytes) -> object:
        plain = http_ece.decrypt(
            body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"
        )
        return json.loads(plain)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as started:
        yield started


@pytest.fixture
async def outbound() -> AsyncIterator[OutboundHttp]:
    async with OutboundHttp(policy=OutboundPolicy(allow=LOOPBACK)) as client:
        yield client


def vapid_keys() -> tuple[str, str]:
    """A VAPID key pair: the private key as PEM, the public key as the browser is given it."""
    vapid = Vapid02()
    vapid.generate_keys()
    public = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return vapid.private_pem().decode(), b64url(public)


def channel(outbound: OutboundHttp, private_key: str) -> WebPushChannel:
    settings = WebPushSettings(
        vapid_private_key=private_key, vapid_subject="mailto:push@shop.test", ttl=3600
    )
    return WebPushChannel(settings, outbound=outbound, clock=FrozenClock(NOW))


async def test_the_push_service_gets_a_payload_only_the_browser_can_read(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    browser = Browser()
    private_key, public_key = vapid_keys()
    receiver.answer(201, headers={"Location": "https://push.test/m/abc"})

    result = await channel(outbound, private_key).send(
        PUSH, browser.subscription(receiver.url("/push/v2/sub-1"))
    )

    assert result.outcome is Outcome.ACCEPTED
    assert result.provider_id == "https://push.test/m/abc"
    [request] = receiver.requests
    assert request.path == "/push/v2/sub-1"
    assert request.headers["content-encoding"] == "aes128gcm"
    assert (request.headers["ttl"], request.headers["urgency"]) == ("3600", "normal")
    assert browser.decrypt(request.body) == {
        "title": "Kettle is back",
        "body": "10% off today",
        "url": "https://shop.test/k",
        "delivery_id": "d-push",
    }
    authorization = request.headers["authorization"]
    assert authorization.startswith("vapid t=")
    assert authorization.endswith(f",k={public_key}")
    assert Vapid02.verify(authorization)
    token = authorization.removeprefix("vapid t=").split(",")[0]
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims == {
        "sub": "mailto:push@shop.test",
        "aud": f"http://127.0.0.1:{receiver.port}",
        "exp": int(NOW.timestamp()) + 12 * 3600,
    }


async def test_a_gone_subscription_fails_for_good_and_says_to_unsubscribe(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    private_key, _ = vapid_keys()
    receiver.answer(410, "push subscription has unsubscribed or expired")
    receiver.answer(429, "", {"Retry-After": "30"})

    gone = await channel(outbound, private_key).send(PUSH, Browser().subscription(receiver.url()))
    busy = await channel(outbound, private_key).send(PUSH, Browser().subscription(receiver.url()))

    assert gone.outcome is Outcome.FAILED_PERMANENT
    assert gone.unsubscribe is True
    assert "HTTP 410" in gone.description and "unsubscribe it" in gone.description
    assert (busy.outcome, busy.retry_after, busy.unsubscribe) == (
        Outcome.FAILED_TEMPORARY,
        "30",
        False,
    )


async def test_a_raw_vapid_key_works_as_well_as_pem(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    raw = b64url(key.private_numbers().private_value.to_bytes(32, "big"))

    result = await channel(outbound, raw).send(PUSH, Browser().subscription(receiver.url()))

    assert result.outcome is Outcome.ACCEPTED
    assert Vapid02.verify(receiver.requests[0].headers["authorization"])


async def test_a_message_too_big_for_web_push_is_refused_before_sending(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    private_key, _ = vapid_keys()
    big = Rendered(channel="push", parts={"title": "t", "body": "x" * 4000}, delivery_id="d")

    result = await channel(outbound, private_key).send(big, Browser().subscription(receiver.url()))

    assert result.outcome is Outcome.FAILED_PERMANENT
    assert "Web Push carries at most 3993" in result.description
    assert receiver.requests == []


async def test_an_endpoint_inside_the_network_is_refused(receiver: Receiver) -> None:
    private_key, _ = vapid_keys()
    async with OutboundHttp() as strict:
        result = await channel(strict, private_key).send(
            PUSH, Browser().subscription(receiver.url())
        )

    assert result.outcome is Outcome.FAILED_PERMANENT
    assert "loopback address" in result.description
    assert receiver.requests == []
