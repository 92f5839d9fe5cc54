"""SMS (Twilio's format), FCM and webhooks against real local receivers answering as providers."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from beacon.core.clock import FrozenClock
from beacon.deliveries.channels.base import (
    DeviceToken,
    Outcome,
    PhoneNumber,
    WebhookEndpoint,
)
from beacon.deliveries.channels.push import FcmChannel, FcmSettings
from beacon.deliveries.channels.sms import SmsChannel, TwilioSettings
from beacon.deliveries.channels.webhook import WebhookChannel
from beacon.deliveries.outbound import LOOPBACK, OutboundHttp, OutboundPolicy
from beacon.deliveries.signing import new_secret
from beacon.deliveries.templates import Rendered
from tests.integration.test_delivery_outbound import Receiver, running_receiver

SMS = Rendered(channel="sms", parts={"text": "Your code is 4417"}, delivery_id="d-sms")
PUSH = Rendered(
    channel="push",
    parts={"title": "Kettle is back", "body": "10% off today", "url": "https://shop.test/k"},
    delivery_id="d-push",
)
BODY = '[{"contactId": 1001, "activityStatus": "READ"}]'
HOOK = Rendered(channel="webhook", parts={"body": BODY}, delivery_id="0195a1b2-c3d4")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as started:
        yield started


@pytest.fixture
async def outbound() -> AsyncIterator[OutboundHttp]:
    async with OutboundHttp(policy=OutboundPolicy(allow=LOOPBACK)) as client:
        yield client


def twilio(receiver: Receiver, outbound: OutboundHttp) -> SmsChannel:
    settings = TwilioSettings(
        account_sid="AC0123456789",
        auth_token="tw-token",
        from_number="+15005550006",
        base_url=f"http://127.0.0.1:{receiver.port}/",
    )
    return SmsChannel(settings, outbound=outbound)


async def test_an_sms_is_posted_as_twilio_expects_and_its_sid_kept(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    receiver.answer(201, '{"sid": "SM9f1c", "status": "queued", "body": "Your code is 4417"}')

    result = await twilio(receiver, outbound).send(SMS, PhoneNumber("+380501234567"))

    assert result.outcome is Outcome.ACCEPTED
    assert result.provider_id == "SM9f1c"
    assert result.latency_ms is not None
    [request] = receiver.requests
    assert (request.method, request.path) == (
        "POST",
        "/2010-04-01/Accounts/AC0123456789/Messages.json",
    )
    assert (
        request.headers["authorization"]
        == "Basic " + base64.b64encode(b"AC0123456789:tw-token").decode()
    )
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.body.decode()) == {
        "To": ["+380501234567"],
        "Body": ["Your code is 4417"],
        "From": ["+15005550006"],
    }


async def test_twilio_refusals_fail_for_good_or_for_now(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    channel = twilio(receiver, outbound)
    receiver.answer(400, '{"code": 21211, "message": "Invalid \'To\' Phone Number", "status": 400}')
    receiver.answer(400, '{"code": 21610, "message": "Attempt to send to unsubscribed recipient"}')
    receiver.answer(429, '{"code": 20429, "message": "Too Many Requests"}', {"Retry-After": "7"})
    receiver.answer(503, "<html>Service Unavailable</html>")

    invalid, stopped, throttled, down = [
        await channel.send(SMS, PhoneNumber("+380501234567")) for _ in range(4)
    ]

    assert invalid.outcome is Outcome.FAILED_PERMANENT and not invalid.unsubscribe
    assert "HTTP 400" in invalid.description and "21211" in invalid.description
    assert stopped.outcome is Outcome.FAILED_PERMANENT and stopped.unsubscribe
    assert throttled.outcome is Outcome.FAILED_TEMPORARY
    assert throttled.retry_after == "7"
    assert down.outcome is Outcome.FAILED_TEMPORARY
    assert down.description.endswith("<html>Service Unavailable</html>")


async def test_an_fcm_message_goes_to_the_project_with_the_bearer_token(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    tokens = iter(["ya29.first", "ya29.second"])

    async def bearer_token() -> str:
        return next(tokens)

    channel = FcmChannel(
        FcmSettings(project_id="shop-app", base_url=receiver.url("")),
        outbound=outbound,
        bearer_token=bearer_token,
    )
    receiver.answer(200, '{"name": "projects/shop-app/messages/0:1500415314455276%31bd1c96"}')
    receiver.answer(
        404,
        orjson.dumps(
            {
                "error": {
                    "code": 404,
                    "status": "NOT_FOUND",
                    "message": "Requested entity was not found.",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                            "errorCode": "UNREGISTERED",
                        }
                    ],
                }
            }
        ),
    )

    sent = await channel.send(PUSH, DeviceToken("fcm-token-1"))
    gone = await channel.send(PUSH, DeviceToken("fcm-token-2"))

    assert sent.outcome is Outcome.ACCEPTED
    assert sent.provider_id == "projects/shop-app/messages/0:1500415314455276%31bd1c96"
    first = receiver.requests[0]
    assert first.path == "/v1/projects/shop-app/messages:send"
    assert first.headers["authorization"] == "Bearer ya29.first"
    assert orjson.loads(first.body) == {
        "message": {
            "token": "fcm-token-1",
            "notification": {"title": "Kettle is back", "body": "10% off today"},
            "data": {"delivery_id": "d-push", "url": "https://shop.test/k"},
        }
    }
    assert receiver.requests[1].headers["authorization"] == "Bearer ya29.second"
    assert gone.outcome is Outcome.FAILED_PERMANENT and gone.unsubscribe
    assert "unregistered" in gone.description


async def test_fcm_without_a_token_or_over_quota_fails_for_now(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    async def no_token() -> str:
        raise RuntimeError("metadata server unreachable")

    async def token() -> str:
        return "ya29.t"

    settings = FcmSettings(project_id="shop-app", base_url=receiver.url(""))
    receiver.answer(429, '{"error": {"status": "RESOURCE_EXHAUSTED"}}', {"Retry-After": "60"})

    tokenless = await FcmChannel(settings, outbound=outbound, bearer_token=no_token).send(
        PUSH, DeviceToken("t")
    )
    throttled = await FcmChannel(settings, outbound=outbound, bearer_token=token).send(
        PUSH, DeviceToken("t")
    )

    assert tokenless.outcome is Outcome.FAILED_TEMPORARY
    assert tokenless.description == (
        "no FCM access token: RuntimeError: metadata server unreachable"
    )
    assert (throttled.outcome, throttled.retry_after) == (Outcome.FAILED_TEMPORARY, "60")


async def test_a_webhook_is_signed_so_the_receiver_verifies_it_with_each_secret(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    new, old = new_secret(), new_secret()
    clock = FrozenClock(datetime.now(UTC))
    channel = WebhookChannel(outbound=outbound, clock=clock)
    endpoint = WebhookEndpoint(receiver.url("/beacon"), (new, old))
    receiver.answer(500, "database is down")

    failed = await channel.send(HOOK, endpoint)
    clock.advance(timedelta(seconds=5))
    accepted = await channel.send(HOOK, endpoint)

    assert failed.outcome is Outcome.FAILED_TEMPORARY
    assert failed.description.startswith("HTTP 500 in ")
    assert failed.description.endswith(": database is down")
    assert accepted.outcome is Outcome.ACCEPTED
    first, retry = receiver.requests
    assert first.headers["webhook-id"] == retry.headers["webhook-id"] == "0195a1b2-c3d4"
    assert int(retry.headers["webhook-timestamp"]) == int(first.headers["webhook-timestamp"]) + 5
    assert retry.headers["content-type"] == "application/json"
    for secret in (new, old):
        assert Webhook(secret).verify(retry.body, retry.headers) == orjson.loads(BODY)
    assert retry.body == BODY.encode()


async def test_webhook_answers_decide_the_outcome(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    channel = WebhookChannel(outbound=outbound, clock=FrozenClock(datetime.now(UTC)))
    endpoint = WebhookEndpoint(receiver.url(), (new_secret(),))
    receiver.answer(410, "gone")
    receiver.answer(404, "no such route")
    receiver.answer(429, "", {"Retry-After": "Wed, 21 Oct 2037 07:28:00 GMT"})
    receiver.answer(204)

    gone, missing, throttled, accepted = [await channel.send(HOOK, endpoint) for _ in range(4)]

    assert gone.outcome is Outcome.FAILED_PERMANENT
    assert missing.outcome is Outcome.FAILED_TEMPORARY
    assert throttled.outcome is Outcome.FAILED_TEMPORARY
    assert throttled.retry_after == "Wed, 21 Oct 2037 07:28:00 GMT"
    assert accepted.outcome is Outcome.ACCEPTED


async def test_a_webhook_to_an_internal_address_fails_for_good_without_a_request(
    receiver: Receiver,
) -> None:
    endpoint = WebhookEndpoint(receiver.url(), (new_secret(),))
    async with OutboundHttp() as strict:
        channel = WebhookChannel(outbound=strict, clock=FrozenClock(datetime.now(UTC)))
        result = await channel.send(HOOK, endpoint)

    assert result.outcome is Outcome.FAILED_PERMANENT
    assert result.description == "127.0.0.1 is a loopback address; Beacon does not send there"
    assert receiver.requests == []


async def test_a_webhook_with_a_bad_secret_fails_for_good(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    channel = WebhookChannel(outbound=outbound, clock=FrozenClock(datetime.now(UTC)))

    result = await channel.send(HOOK, WebhookEndpoint(receiver.url(), ("secret",)))

    assert result.outcome is Outcome.FAILED_PERMANENT
    assert result.description == (
        "the endpoint cannot be signed for: the webhook secret must start with 'whsec_'"
    )
    assert receiver.requests == []
