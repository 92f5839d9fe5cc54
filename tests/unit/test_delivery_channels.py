"""The channel registry describes each channel, refuses bad settings by name, builds channels."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from beacon.core.clock import FrozenClock
from beacon.deliveries.channels.base import (
    DeviceToken,
    EmailAddress,
    Outcome,
    PhoneNumber,
    PushSubscription,
    WebhookEndpoint,
)
from beacon.deliveries.channels.capture import CaptureChannel
from beacon.deliveries.channels.email import EmailChannel
from beacon.deliveries.channels.registry import ChannelRegistry, ChannelServices, default_registry
from beacon.deliveries.outbound import OutboundHttp
from beacon.deliveries.signing import new_secret
from beacon.deliveries.templates import Rendered

P256DH = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
AUTH = "tBHItJI5svbpez7KI4CCXg"


@pytest.fixture
async def services() -> AsyncIterator[ChannelServices]:
    async with OutboundHttp() as outbound:
        yield ChannelServices(
            outbound=outbound, clock=FrozenClock(datetime(2025, 3, 1, tzinfo=UTC))
        )


def test_the_registry_lists_every_built_in_channel_with_what_it_needs() -> None:
    registry = default_registry()

    assert [spec.name for spec in registry.specs()] == [
        "capture",
        "email",
        "fcm",
        "sms",
        "web_push",
        "webhook",
    ]
    email = registry.spec("email").as_json()
    assert email["kinds"] == ["email"]
    settings = {s["name"]: s for s in email["settings"]}
    assert settings["host"]["required"] is True
    assert settings["from_address"]["required"] is True
    assert settings["port"]["required"] is False
    assert settings["password"]["secret"] is True
    assert settings["host"]["description"] == "SMTP server host name"
    sms = {s.name: s for s in registry.spec("sms").settings}
    assert sms["auth_token"].secret and sms["account_sid"].required
    assert registry.spec("capture").kinds == ("email", "sms", "push", "webhook")
    with pytest.raises(KeyError, match="no channel named 'fax' \\(known: capture, email"):
        registry.spec("fax")


async def test_a_channel_is_built_from_its_settings(services: ChannelServices) -> None:
    registry = default_registry()

    channel = registry.create(
        "email",
        settings={"host": "smtp.shop.test", "from_address": "news@shop.test", "security": "tls"},
        services=services,
    )

    assert isinstance(channel, EmailChannel)
    assert isinstance(registry.create("capture", settings={}, services=services), CaptureChannel)


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("email", {"from_address": "a@shop.test"}, "email settings: 'host' is required"),
        ("email", {"host": "h", "from_address": "a@shop.test", "pot": 25}, "unknown setting 'pot'"),
        (
            "email",
            {"host": "h", "from_address": "a@shop.test", "port": "25"},
            "'port' must be a whole number",
        ),
        (
            "email",
            {"host": "h", "from_address": "a@shop.test", "security": "ssl"},
            "'security' must be one of 'plain', 'starttls', 'tls'",
        ),
        ("email", {"host": "", "from_address": "a@shop.test"}, "'host' must be non-empty text"),
        ("email", {"host": "h", "from_address": "shop"}, "'shop' is not an email address"),
        (
            "email",
            {"host": "h", "from_address": "a@shop.test", "username": "u"},
            "username and password go together",
        ),
        (
            "sms",
            {"account_sid": "AC1", "auth_token": "t"},
            "give from_number or messaging_service_sid",
        ),
        (
            "sms",
            {"account_sid": "AC1", "auth_token": "t", "from_number": "+1", "base_url": "api"},
            "base_url 'api' is not an absolute",
        ),
        (
            "web_push",
            {"vapid_private_key": "nope", "vapid_subject": "mailto:a@shop.test"},
            "not a P-256 private key",
        ),
        (
            "web_push",
            {"vapid_private_key": "k", "vapid_subject": "a@shop.test"},
            "mailto: or https:",
        ),
        ("fcm", {"project_id": "shop"}, "fcm needs an OAuth access token provider"),
        ("webhook", {"url": "https://x"}, "webhook settings: unknown setting 'url'"),
        ("capture", {"x": 1}, "capture settings: unknown setting 'x'"),
    ],
)
async def test_bad_settings_are_refused_naming_the_setting(
    services: ChannelServices, name: str, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        default_registry().create(name, settings=settings, services=services)


def test_a_name_is_registered_once() -> None:
    registry = ChannelRegistry()
    spec = default_registry().spec("capture")
    registry.register(spec, lambda settings, services: CaptureChannel())

    with pytest.raises(ValueError, match="'capture' is already registered"):
        registry.register(spec, lambda settings, services: CaptureChannel())


async def test_capture_returns_what_would_have_gone_out_without_secrets() -> None:
    rendered = Rendered(channel="webhook", parts={"body": '{"a": 1}'}, delivery_id="d-9")
    endpoint = WebhookEndpoint("https://hooks.shop.test/in", (new_secret(),))

    result = await CaptureChannel().send(rendered, endpoint)

    assert result.outcome is Outcome.ACCEPTED
    assert result.provider_id == "capture:d-9"
    assert result.captured == {
        "channel": "webhook",
        "delivery_id": "d-9",
        "recipient": {"kind": "webhook_endpoint", "url": "https://hooks.shop.test/in"},
        "parts": {"body": '{"a": 1}'},
    }
    assert "whsec_" not in repr(result)
    pushed = await CaptureChannel().send(
        Rendered(channel="push", parts={"title": "t", "body": "b"}, delivery_id="d"),
        PushSubscription("https://push.test/e/1", P256DH, AUTH),
    )
    assert pushed.captured is not None
    assert pushed.captured["recipient"] == {
        "kind": "push_subscription",
        "endpoint": "https://push.test/e/1",
    }


async def test_a_channel_refuses_a_message_or_recipient_it_does_not_send(
    services: ChannelServices,
) -> None:
    email = default_registry().create(
        "email", settings={"host": "h", "from_address": "a@shop.test"}, services=services
    )
    sms = Rendered(channel="sms", parts={"text": "hi"}, delivery_id="d")
    mail = Rendered(channel="email", parts={"subject": "s", "text": "t"}, delivery_id="d")

    wrong_kind = await email.send(sms, EmailAddress("ann@shop.test"))
    wrong_recipient = await email.send(mail, PhoneNumber("+380501234567"))

    assert wrong_kind.outcome is Outcome.FAILED_PERMANENT
    assert wrong_kind.description == "the email channel cannot send a sms message"
    assert wrong_recipient.outcome is Outcome.FAILED_PERMANENT
    assert wrong_recipient.description == (
        "the email channel sends to an email address, not PhoneNumber"
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: EmailAddress("ann"), "'ann' is not an email address"),
        (lambda: EmailAddress("ann@shop.test\r\nBcc: x@y.z"), "is not an email address"),
        (lambda: EmailAddress("ann@shop.test", "Ann\nBcc"), "name may not contain line breaks"),
        (lambda: PhoneNumber("0501234567"), "not an E.164 phone number"),
        (lambda: PhoneNumber("+12"), "8 to 15 digits"),
        (lambda: PushSubscription("ftp://push.test", P256DH, AUTH), "endpoint must be an http"),
        (lambda: PushSubscription("https://push.test", AUTH, AUTH), "keys.p256dh must be"),
        (lambda: PushSubscription("https://push.test", P256DH, P256DH), "keys.auth must be"),
        (lambda: PushSubscription.from_json({"endpoint": "https://p.test"}), "needs its keys"),
        (lambda: PushSubscription.from_json([]), "an object with an endpoint URL"),
        (lambda: DeviceToken(""), "one line of text"),
        (lambda: WebhookEndpoint("hooks.shop.test", ()), "not an absolute http"),
    ],
)
def test_bad_recipients_are_refused_naming_the_problem(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_a_browser_subscription_is_read_as_it_is_given() -> None:
    raw = {
        "endpoint": "https://push.test/e/1",
        "expirationTime": None,
        "keys": {"p256dh": P256DH, "auth": AUTH},
    }

    assert PushSubscription.from_json(raw) == PushSubscription(
        "https://push.test/e/1", P256DH, AUTH
    )
