"""Activity webhooks that can be trusted, against real local receivers, on a manual clock:
retried through the schedule with the same `webhook-id`, `Retry-After` honoured, timeouts,
`410 Gone`, five days of failures, batches bounded by size and time, status filters, replay,
test sends, the attempts log, secret rotation, and the events and Amplitude destinations.

Activity comes from sends on the capture channel: each delivered message is one DELIVERED
element.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from beacon.deliveries.requests import DeliveryRequest, request_deliveries, request_delivery
from tests.beacon_process import free_port
from tests.integration.conftest import ADMIN, ServeApp, Served
from tests.integration.test_delivery_outbound import Receiver, running_receiver
from tests.messaging_driver import (
    MessagingDriver,
    check_esputnik,
    receiver_on,
    verified_elements,
    wait_until,
)

NOTE = {"email": {"subject": "Hello", "text": "Hello {{ context.n | default(0) }}"}}
SETTINGS: dict[str, Any] = {
    "clock": "manual",
    "outbound_allow_networks": ["127.0.0.0/8"],
    "webhook_batch_seconds": 0.0,
}


@asynccontextmanager
async def messaging(serve: ServeApp, **overrides: Any) -> AsyncIterator[MessagingDriver]:
    async with serve(**{**SETTINGS, **overrides}) as served:
        yield MessagingDriver(served.client, ADMIN)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as started:
        yield started


async def deliver(api: MessagingDriver, count: int, *, first: int = 0) -> list[str]:
    """Send `count` capture messages to new people and wait until each is sent."""
    message_id = await api.message("note", NOTE, tag="notes")
    ids = [
        await api.send(message_id, {"email": f"p{n}@example.com"}, params={"n": n})
        for n in range(first, first + count)
    ]
    for delivery_id in ids:
        await api.settled(delivery_id, "sent")
    return ids


async def received(receiver: Receiver, secret: str, count: int) -> list[tuple[str, Any]]:
    """Wait until the receiver got `count` elements (verified); return them with their ids."""

    async def enough() -> bool:
        return len(verified_elements(receiver, secret)) >= count

    await wait_until(enough, what=f"{count} elements")
    return verified_elements(receiver, secret)


def once_each(elements: list[tuple[str, Any]]) -> dict[int, set[str]]:
    """Each message instance's webhook ids: delivered under one id (maybe more than once)."""
    ids: dict[int, set[str]] = defaultdict(set)
    for webhook_id, element in elements:
        ids[element["messageInstanceId"]].add(webhook_id)
    return ids


async def messages_of(api: MessagingDriver, endpoint_id: str) -> list[dict[str, Any]]:
    page = await api.call("GET", f"/api/webhooks/{endpoint_id}/messages")
    return list(page["items"])


async def attempted(
    api: MessagingDriver, endpoint_id: str, attempts: int, items: int
) -> list[dict[str, Any]]:
    """Wait until the endpoint's messages hold `items` elements, each message attempted
    `attempts` times and none in flight (so an advance of the clock finds its retry)."""
    found: list[dict[str, Any]] = []

    async def done() -> bool:
        found[:] = await messages_of(api, endpoint_id)
        return sum(m["item_count"] for m in found) == items and all(
            m["attempts"] >= attempts and m["status"] != "sending" for m in found
        )

    await wait_until(done, what=f"{items} elements attempted {attempts} times")
    return found


async def test_a_receiver_down_for_a_while_gets_everything_once_per_webhook_id(
    serve: ServeApp,
) -> None:
    port = free_port()
    async with messaging(serve, webhook_batch_max_items=2) as api:
        endpoint_id, secret = await api.endpoint(f"http://127.0.0.1:{port}/hook")
        await deliver(api, 5)
        count = len(await attempted(api, endpoint_id, 1, 5))
        for attempt, step in enumerate((6, 330, 1980), start=2):  # the delays, each +10 %
            await api.advance(step)
            await attempted(api, endpoint_id, attempt, 5)
        receiver = Receiver()
        async with receiver_on(port, receiver):
            await api.advance(7920)  # the fourth delay (2 h): the receiver is up again
            elements = await received(receiver, secret, 5)
            messages = await attempted(api, endpoint_id, 5, 5)
            attempts = await api.call("GET", f"/api/webhooks/{endpoint_id}/attempts")

    assert len(elements) == 5
    assert all(len(ids) == 1 for ids in once_each(elements).values())
    for _, element in elements:
        check_esputnik(element)
        assert element["activityStatus"] == "DELIVERED"
    assert 3 <= count <= 5  # at most two elements a batch
    assert [m["status"] for m in messages] == ["delivered"] * count
    assert [m["attempts"] for m in messages] == [5] * count
    outcomes = [a["outcome"] for a in attempts["items"]]
    assert (outcomes.count("no_answer"), outcomes.count("delivered")) == (4 * count, count)


async def test_500_then_200_and_retry_after_are_honoured(
    serve: ServeApp, receiver: Receiver
) -> None:
    receiver.answer(500, "broken")
    receiver.answer(503, "busy", {"Retry-After": "900"})
    async with messaging(serve) as api:
        endpoint_id, secret = await api.endpoint(receiver.url())
        await deliver(api, 1)
        await attempted(api, endpoint_id, 1, 1)
        await api.advance(6)
        await attempted(api, endpoint_id, 2, 1)
        await api.advance(400)  # the schedule's 5 min (+10 %) has passed, Retry-After's 15 not
        [waiting] = await messages_of(api, endpoint_id)
        await api.advance(600)
        await attempted(api, endpoint_id, 3, 1)
        [message] = await messages_of(api, endpoint_id)

    assert (waiting["status"], waiting["attempts"]) == ("retrying", 2)
    assert (message["status"], message["attempts"]) == ("delivered", 3)
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(ids) == 3 and len(set(ids)) == 1 and ids[0] == message["id"]
    assert len({r.body for r in receiver.requests}) == 1
    elements = verified_elements(receiver, secret)
    assert [e["activityStatus"] for _, e in elements] == ["DELIVERED"] * 3


async def test_a_receiver_that_times_out_gets_the_same_webhook_id_again(
    serve: ServeApp, receiver: Receiver
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3)
        return web.Response(text="too late")

    receiver.answer_with(slow)
    async with messaging(serve, webhook_timeout_seconds=0.5) as api:
        endpoint_id, secret = await api.endpoint(receiver.url())
        await deliver(api, 2)

        async def timed_out() -> bool:
            attempts = await api.call("GET", f"/api/webhooks/{endpoint_id}/attempts")
            return any(a["outcome"] == "no_answer" for a in attempts["items"])

        await wait_until(timed_out, what="the timeout")
        await api.advance(6)

        async def delivered() -> bool:
            return {m["status"] for m in await messages_of(api, endpoint_id)} == {"delivered"}

        await wait_until(delivered, what="every message delivered")
        attempts = await api.call("GET", f"/api/webhooks/{endpoint_id}/attempts")

    elements = verified_elements(receiver, secret)
    assert len({e["messageInstanceId"] for _, e in elements}) == 2
    assert all(len(ids) == 1 for ids in once_each(elements).values())
    [late] = [a for a in attempts["items"] if a["outcome"] == "no_answer"]
    assert "no answer within 0.5 s" in late["error"]


async def test_410_gone_disables_the_endpoint_with_a_system_event_and_enabling_sends_the_rest(
    serve: ServeApp, receiver: Receiver
) -> None:
    receiver.answer(410, "gone")
    async with messaging(serve) as api:
        endpoint_id, secret = await api.endpoint(receiver.url())
        first = await deliver(api, 1)

        async def disabled() -> bool:
            return not (await api.call("GET", f"/api/webhooks/{endpoint_id}"))["enabled"]

        await wait_until(disabled, what="the endpoint to be disabled")
        second = await deliver(api, 1, first=1)
        instances = [(await api.delivery(d))["message_instance_id"] for d in first + second]
        await api.advance(3600)
        assert len(receiver.requests) == 1  # nothing more while disabled
        [event] = await api.system_events("webhook.endpoint_disabled")
        endpoint = await api.call("GET", f"/api/webhooks/{endpoint_id}")

        await api.call("PATCH", f"/api/webhooks/{endpoint_id}", json={"enabled": True})
        await received(receiver, secret, 2)
        replay = await api.call(
            "POST",
            f"/api/webhooks/{endpoint_id}/replay",
            json={"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"},
        )
        await received(receiver, secret, 3)
        messages = await messages_of(api, endpoint_id)

    assert event["profile_id"] is None
    assert event["properties"]["reason"] == "the endpoint answered HTTP 410: gone"
    assert endpoint["disabled_reason"] == event["properties"]["reason"]
    # Sent when enabled: what waited; then the replay: what failed, under its own id.
    gone, waited, replayed = (orjson.loads(r.body) for r in receiver.requests)
    assert [[e["messageInstanceId"] for e in body] for body in (gone, waited)] == [
        instances[:1],
        instances[1:],
    ]
    assert replayed == gone and replay == {"replayed": 1}
    assert receiver.requests[2].headers["webhook-id"] == receiver.requests[0].headers["webhook-id"]
    assert sorted(m["status"] for m in messages) == ["delivered", "delivered"]


async def test_an_endpoint_failing_for_five_days_is_disabled(
    serve: ServeApp, receiver: Receiver
) -> None:
    for _ in range(100):
        receiver.answer(500, "down")
    async with messaging(serve) as api:
        endpoint_id, _ = await api.endpoint(receiver.url())
        for day in range(5):
            await deliver(api, 1, first=day)
            await attempted(api, endpoint_id, 1, day + 1)
            await api.advance(86_400)  # and each day's retries fail

        async def disabled() -> bool:
            return not (await api.call("GET", f"/api/webhooks/{endpoint_id}"))["enabled"]

        await wait_until(disabled, what="the endpoint to be disabled")
        endpoint = await api.call("GET", f"/api/webhooks/{endpoint_id}")
        events = await api.system_events("webhook.endpoint_disabled")

    assert endpoint["enabled"] is False
    assert "failing for 5.0 days" in endpoint["disabled_reason"]
    assert len(events) == 1


async def test_batches_are_bounded_by_size_and_by_time(serve: ServeApp, receiver: Receiver) -> None:
    async with messaging(serve, webhook_batch_seconds=10.0, webhook_batch_max_items=3) as api:
        _, secret = await api.endpoint(receiver.url())
        await deliver(api, 7)
        await received(receiver, secret, 6)
        assert sorted(len(orjson.loads(r.body)) for r in receiver.requests) == [3, 3]
        await api.advance(10)
        await received(receiver, secret, 7)

    assert sorted(len(orjson.loads(r.body)) for r in receiver.requests) == [1, 3, 3]


async def test_a_status_filter_keeps_only_what_the_endpoint_asked_for(
    serve: ServeApp, receiver: Receiver
) -> None:
    async with messaging(serve) as api:
        _, secret = await api.endpoint(receiver.url(), statuses=["UNDELIVERED"])
        await deliver(api, 2)
        broken = await api.message(
            "broken", {"email": {"subject": "{{ context.missing }}", "text": "x"}}
        )
        failed = await api.send(broken, {"email": "p9@example.com"})
        await api.settled(failed, "failed")
        [(_, element)] = await received(receiver, secret, 1)

    check_esputnik(element)
    assert element["activityStatus"] == "UNDELIVERED"
    assert "context.missing" in element["statusDescription"]


async def test_a_test_send_is_signed_and_logged_and_secrets_rotate_with_an_overlap(
    serve: ServeApp, receiver: Receiver
) -> None:
    async with messaging(serve) as api:
        endpoint_id, old = await api.endpoint(receiver.url())
        tested = await api.call("POST", f"/api/webhooks/{endpoint_id}/test")
        rotated = await api.call(
            "POST", f"/api/webhooks/{endpoint_id}/secrets/rotate", json={"overlap_seconds": 3600}
        )
        await api.call("POST", f"/api/webhooks/{endpoint_id}/test")
        dropped = await api.call(
            "POST", f"/api/webhooks/{endpoint_id}/secrets/rotate", json={"overlap_seconds": 0}
        )
        await api.call("POST", f"/api/webhooks/{endpoint_id}/test")
        attempts = await api.call("GET", f"/api/webhooks/{endpoint_id}/attempts")

    assert (tested["outcome"], tested["status_code"]) == ("delivered", 200)
    first, second, third = receiver.requests
    Webhook(old).verify(first.body, dict(first.headers))
    [sample] = orjson.loads(first.body)
    check_esputnik(sample)
    assert len(second.headers["webhook-signature"].split()) == 2
    for secret in (old, rotated["secret"]):
        Webhook(secret).verify(second.body, dict(second.headers))
    Webhook(dropped["secret"]).verify(third.body, dict(third.headers))
    for gone in (old, rotated["secret"]):
        with pytest.raises(WebhookVerificationError):
            Webhook(gone).verify(third.body, dict(third.headers))
    assert [a["webhook_message_id"][:5] for a in attempts["items"]] == ["test_"] * 3


async def test_chosen_event_types_go_to_a_generic_webhook_and_to_amplitude(
    serve: ServeApp, receiver: Receiver
) -> None:
    async with messaging(serve) as api:
        _, secret = await api.endpoint(
            receiver.url("/events"), format="events", event_types=["message.delivered"]
        )
        await api.endpoint(
            receiver.url("/2/httpapi"),
            format="amplitude",
            event_types=["message.delivered"],
            api_key="amp-key",
        )
        await deliver(api, 2)

        async def both() -> bool:
            return sum(len(_items(r.body)) for r in receiver.requests) >= 4

        await wait_until(both, what="both destinations")

    by_path: dict[str, list[Any]] = defaultdict(list)
    for request in receiver.requests:
        by_path[request.path].append(orjson.loads(request.body))
    generic = [e for body in by_path["/events"] for e in body]
    assert {e["type"] for e in generic} == {"message.delivered"}
    assert set(generic[0]) == {"id", "type", "source_id", "profile_id", "occurred_at", "properties"}
    [amplitude] = by_path["/2/httpapi"][:1]
    assert amplitude["api_key"] == "amp-key"
    event = amplitude["events"][0]
    assert set(event) == {"event_type", "user_id", "time", "event_properties", "insert_id"}
    assert isinstance(event["time"], int)
    for request in receiver.requests:
        if request.path == "/events":
            Webhook(secret).verify(request.body, dict(request.headers))


def _items(body: bytes) -> list[Any]:
    value = orjson.loads(body)
    return list(value["events"] if isinstance(value, dict) else value)


async def test_endpoints_with_internal_addresses_or_bad_filters_are_refused(
    serve: ServeApp,
) -> None:
    async with serve(clock="manual") as served:
        api = MessagingDriver(served.client, ADMIN)
        refused = {
            url: await served.client.post("/api/webhooks", json={"url": url}, headers=ADMIN)
            for url in (
                "http://127.0.0.1:9/hook",
                "http://10.1.2.3/hook",
                "http://169.254.169.254/latest/meta-data",
                "http://[::1]/hook",
                "ftp://example.com/hook",
            )
        }
        bad_filter = await served.client.post(
            "/api/webhooks",
            json={"url": "http://203.0.113.9/h", "statuses": ["OPENED"]},
            headers=ADMIN,
        )
        listed = await api.call("GET", "/api/webhooks")

    messages = {url: r.json()["detail"][0]["msg"] for url, r in refused.items()}
    assert all(r.status_code == 422 for r in refused.values())
    assert "127.0.0.1 is a loopback address" in messages["http://127.0.0.1:9/hook"]
    assert "10.1.2.3 is a private address" in messages["http://10.1.2.3/hook"]
    assert "link-local" in messages["http://169.254.169.254/latest/meta-data"]
    assert "loopback" in messages["http://[::1]/hook"]
    assert "not an absolute http(s) URL" in messages["ftp://example.com/hook"]
    assert bad_filter.status_code == 422
    assert "'OPENED' is not one of" in bad_filter.text
    assert listed == []


@asynccontextmanager
async def webhook_channel(serve: ServeApp) -> AsyncIterator[tuple[Served, MessagingDriver, str]]:
    """A server whose `webhook` channel calls URLs, its driver, and a person known to it."""
    async with serve(**SETTINGS, delivery_channels={"webhook": "webhook"}) as served:
        api = MessagingDriver(served.client, ADMIN)
        message_id = await api.message("note", NOTE)
        person = await api.settled(await api.send(message_id, {"email": "p@example.com"}))
        yield served, api, person["profile_id"]


async def test_a_journeys_webhook_step_calls_its_url_with_its_headers(
    serve: ServeApp, receiver: Receiver
) -> None:
    async with webhook_channel(serve) as (served, api, profile_id):
        content = {
            "url": receiver.url("/crm"),
            "method": "POST",
            "headers": {"Authorization": "Bearer crm-token"},
            "body": '{"lead": "{{ not a template }}", "n": 1}',
        }
        request = DeliveryRequest(
            profile_id=profile_id,
            channel="webhook",
            idempotency_key="run-1/call/1",
            requested_by="journey:leads",
            content=content,
        )
        delivery_id = await served.app.state.writer.run(lambda tx: request_delivery(tx, request))
        sent = await api.settled(delivery_id)

    assert sent["status"] == "sent", sent
    [call] = [r for r in receiver.requests if r.path == "/crm"]
    assert call.body == b'{"lead": "{{ not a template }}", "n": 1}'
    assert call.headers["authorization"] == "Bearer crm-token"
    assert call.headers["webhook-id"] == delivery_id
    assert "webhook-signature" not in call.headers  # no endpoint of this URL: no secret


async def test_requests_stored_a_batch_at_a_time_are_each_sent_once(
    serve: ServeApp, receiver: Receiver
) -> None:
    async with webhook_channel(serve) as (served, api, profile_id):

        def call(key: str) -> DeliveryRequest:
            body = f'{{"key": "{key}"}}'
            content = {"url": receiver.url(f"/crm/{key}"), "method": "POST", "body": body}
            return DeliveryRequest(
                profile_id=profile_id,
                channel="webhook",
                idempotency_key=key,
                requested_by="journey:leads",
                content=content,
            )

        write = served.app.state.writer.run
        [earlier] = await write(lambda tx: request_deliveries(tx, [call("k0")]))
        batch = [call("k1"), call("k0"), call("k2"), call("k1")]
        ids = await write(lambda tx: request_deliveries(tx, batch))
        for delivery_id in (earlier, ids[0], ids[2]):
            assert delivery_id is not None
            settled = await api.settled(delivery_id)
            assert settled["status"] == "sent", str(settled)

    # a key stored before, or earlier in the same batch, is the same request: no second one
    assert ids[1] is None and ids[3] is None
    assert len({earlier, ids[0], ids[2]}) == 3
    paths = sorted(r.path for r in receiver.requests if r.path.startswith("/crm/"))
    assert paths == ["/crm/k0", "/crm/k1", "/crm/k2"]


async def test_the_webhook_log_and_the_delivery_log_are_cleaned_up_after_their_time(
    serve: ServeApp, receiver: Receiver
) -> None:
    day = 86_400
    async with messaging(serve) as api:
        endpoint_id, secret = await api.endpoint(receiver.url())
        [old] = await deliver(api, 1)
        await received(receiver, secret, 1)
        await api.advance(31 * day)
        [recent] = await deliver(api, 1, first=1)
        await received(receiver, secret, 2)
        log = f"/api/webhooks/{endpoint_id}"

        async def only_recent_logged() -> bool:
            attempts = (await api.call("GET", f"{log}/attempts"))["items"]
            return len(attempts) == 1

        await wait_until(only_recent_logged, what="the month-old webhook attempt deleted")
        batches = (await api.call("GET", f"{log}/messages"))["items"]
        kept = await api.call("GET", f"/api/deliveries/{old}")
        await api.advance(700 * day)  # `old` was sent 731 days ago, `recent` 700

        async def old_delivery_gone() -> bool:
            answer = await api.client.get(f"/api/deliveries/{old}", headers=ADMIN)
            return answer.status_code == 404

        await wait_until(old_delivery_gone, what="the two-year-old delivery deleted")
        still = await api.call("GET", f"/api/deliveries/{recent}")

    assert len(batches) == 1  # the batch delivered a month ago went with its attempt
    assert kept["status"] == "sent"  # the delivery log keeps what the event history keeps
    assert still["status"] == "sent"
