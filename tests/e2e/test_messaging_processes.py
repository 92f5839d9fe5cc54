"""Messaging through real processes, as the issue's acceptance asks.

On SQLite (`beacon serve`, manual clock): a transactional send and a journey's send arrive at
a real SMTP server with their unsubscribe headers; opening, clicking and unsubscribing through
the real HTTP endpoints record the system events, and the clicker enters a segment of people
who clicked; a local HTTP server gets the activity as eSputnik arrays whose signatures verify
with `standardwebhooks`.

On PostgreSQL and Redis (`beacon serve` + `beacon worker`): the delivery worker is killed with
SIGKILL while it has messages in flight (the SMTP server holds them); a new worker sends what
was left and nothing twice. Activity webhooks reach a receiver that is down for a while (the
test clock moved through the retry schedule), one that answers 500 then 200, and one that
times out, every element once per webhook id.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from tests.beacon_process import BeaconProcess, free_port
from tests.conftest import NO_REDIS, REDIS_URL, delete_redis_keys, new_postgres_database
from tests.e2e.test_timers_processes import wait_for_workers
from tests.integration.test_delivery_outbound import Receiver, running_receiver
from tests.messaging_driver import (
    MessagingDriver,
    check_esputnik,
    html_part,
    receiver_on,
    smtp_mailbox,
    smtp_settings,
    verified_elements,
    wait_until,
)

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "messaging-e2e-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ORDER = {
    "email": {
        "subject": "Order {{ context.order_id }} confirmed",
        "html": "<p>Hi {{ profile.traits.first_name | default('there') }},</p>"
        "<p><a href='https://shop.example.com/orders/{{ context.order_id }}'>your order</a></p>"
        "<p><a href='{{ message.unsubscribe_url }}'>unsubscribe</a></p>",
        "text": "Order {{ context.order_id }} confirmed",
    }
}


def messaging_settings(smtp_port: int, **more: str) -> dict[str, str]:
    return {
        "clock": "manual",
        "delivery_channels": json.dumps({"email": "email"}),
        "channel_settings": json.dumps({"email": smtp_settings(smtp_port)}),
        "outbound_allow_networks": "127.0.0.0/8",
        "webhook_batch_seconds": "0",
        "cache_ttl_seconds": "0",
        "worker_heartbeat_seconds": "1",
        "consumer_retry_base_seconds": "0.2",
        "consumer_retry_max_seconds": "1",
        **more,
    }


def local(url: str, beacon: BeaconProcess) -> str:
    assert url.startswith(beacon.url), url
    return url


async def test_a_send_arrives_and_its_tracking_comes_back_as_events_and_signed_webhooks(
    tmp_path: Path,
) -> None:
    async with smtp_mailbox() as mailbox, running_receiver() as receiver:
        beacon = BeaconProcess.on(
            f"sqlite:///{tmp_path / 'beacon.db'}",
            tmp_path,
            admin_token=ADMIN_TOKEN,
            settings=messaging_settings(mailbox.port),
        )
        beacon.env["BEACON_PUBLIC_URL"] = beacon.url
        beacon.cli("migrate")
        await beacon.astart()
        try:
            async with httpx.AsyncClient(base_url=beacon.url, timeout=30) as http:
                api = MessagingDriver(http, ADMIN)
                _, secret = await api.endpoint(receiver.url())
                clickers = {"name": "clickers", "rule": {"event": "message.clicked"}}
                await api.call("POST", "/api/segments", 201, json=clickers)
                message_id = await api.message("order", ORDER, tag="orders", transactional=True)
                delivery_id = await api.send(
                    message_id, {"email": "ann@example.com"}, params={"order_id": "A-17"}
                )
                delivered = await api.settled(delivery_id)
                assert delivered["status"] == "sent", delivered

                [email] = mailbox.to("ann@example.com")
                assert email["Subject"] == "Order A-17 confirmed"
                assert delivery_id in email["Message-ID"]
                assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
                [one_click] = re.findall(r"<(https?://[^>]+)>", email["List-Unsubscribe"])
                assert one_click.startswith(f"{beacon.url}/m/unsubscribe-one-click/")
                page = html_part(email)
                [pixel] = re.findall(r'<img src="([^"]+)"', page)
                [order_link, _unsubscribe] = re.findall(r"<a href=[\"']([^\"']+)", page)
                assert "shop.example.com" not in order_link  # it goes through the redirect

                opened = await http.get(local(pixel, beacon))
                assert (opened.status_code, opened.headers["content-type"]) == (200, "image/gif")
                clicked = await http.get(local(order_link, beacon))
                assert clicked.status_code == 302
                assert clicked.headers["location"] == "https://shop.example.com/orders/A-17"
                gone = await http.post(
                    local(one_click, beacon),
                    content=b"List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                assert gone.status_code == 200, gone.text

                wanted = {"DELIVERED", "READ", "CLICKED", "UNSUBSCRIBED"}

                async def all_activity_arrived() -> bool:
                    got = {e["activityStatus"] for _, e in verified_elements(receiver, secret)}
                    return got >= wanted

                await wait_until(all_activity_arrived, what="the activity webhooks")
                profile_id = delivered["profile_id"]

                async def in_segment() -> bool:
                    found = await api.call("GET", f"/api/profiles/{profile_id}/segments")
                    return [s["name"] for s in found["segments"]] == ["clickers"]

                await wait_until(in_segment, what="the clicker to enter the segment")
                events = await api.system_events()
                again = await api.send(
                    message_id, {"email": "ann@example.com"}, params={"order_id": "A-18"}
                )
                await api.settled(again)
        finally:
            beacon.stop()

    by_type = {e["type"]: e for e in events}
    assert set(by_type) >= {
        "message.delivered",
        "message.read",
        "message.clicked",
        "message.unsubscribed",
        "segment.entered",
    }
    clicked_event = by_type["message.clicked"]["properties"]
    assert clicked_event["clickEventLink"] == "https://shop.example.com/orders/A-17"
    assert clicked_event["deliveryId"] == delivery_id
    elements = verified_elements(receiver, secret)
    for _, element in elements:
        check_esputnik(element)
        assert element["messageId"] == message_id
        assert element["messageTag"] == "orders"
        assert element["email"] == "ann@example.com"
    statuses = Counter(e["activityStatus"] for _, e in elements)
    assert statuses["READ"] == statuses["UNSUBSCRIBED"] == statuses["CLICKED"] == 1
    # A transactional message still reaches an address that only unsubscribed.
    assert len(mailbox.to("ann@example.com")) == 2


JOURNEY = {
    "name": "order-confirmation",
    "trigger": {"type": "event", "event": "PURCHASE"},
    "entry": {"mode": "every_time"},
    "start": "confirm",
    "steps": {
        "confirm": {
            "type": "send",
            "channel": "email",
            "transactional": True,
            "content": {
                "subject": "Order {{ event.properties.order_nr }} confirmed",
                "text": "Thank you for order {{ event.properties.order_nr }}.",
            },
        }
    },
}


async def test_a_journey_send_arrives_at_the_smtp_server(tmp_path: Path) -> None:
    async with smtp_mailbox() as mailbox:
        beacon = BeaconProcess.on(
            f"sqlite:///{tmp_path / 'beacon.db'}",
            tmp_path,
            admin_token=ADMIN_TOKEN,
            settings=messaging_settings(mailbox.port),
        )
        beacon.env["BEACON_PUBLIC_URL"] = beacon.url
        beacon.cli("migrate")
        await beacon.astart()
        try:
            async with httpx.AsyncClient(base_url=beacon.url, timeout=30) as http:
                api = MessagingDriver(http, ADMIN)
                await api.call("POST", "/api/journeys", 201, json=JOURNEY)
                await api.call("POST", "/api/sources", 201, json={"id": "shop", "name": "shop"})
                key = (await api.call("GET", "/api/sources/shop"))["write_key"]
                sent = await http.post(
                    "/api/v1/events",
                    json={
                        "events": [
                            {
                                "type": "PURCHASE",
                                "user_id": "u-1",
                                "email": "bo@example.com",
                                "properties": {"order_nr": "B-2"},
                            }
                        ]
                    },
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert sent.status_code == 200, sent.text

                async def arrived() -> bool:
                    return bool(mailbox.to("bo@example.com"))

                await wait_until(arrived, what="the journey's email")
                [delivery] = await api.deliveries()
        finally:
            beacon.stop()

    [email] = mailbox.to("bo@example.com")
    assert email["Subject"] == "Order B-2 confirmed"
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert (delivery["status"], delivery["message_tag"]) == ("sent", "order-confirmation")


@pytest.fixture
def scale_out_url() -> Iterator[str]:
    if not REDIS_URL:
        pytest.skip(NO_REDIS)
    with new_postgres_database("beacon_messaging_e2e") as url:
        yield url


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_delivery_worker_killed_mid_batch_loses_nothing_and_sends_nothing_twice(
    scale_out_url: str, tmp_path: Path
) -> None:
    sends, accepted_first = 30, 8
    prefix = f"beacon-messaging-e2e-{uuid.uuid4().hex}"
    async with smtp_mailbox() as mailbox:
        settings = messaging_settings(
            mailbox.port,
            bus_url=REDIS_URL or "",
            bus_prefix=prefix,
            delivery_concurrency="4",
        )
        beacon = BeaconProcess.on(
            scale_out_url, tmp_path, admin_token=ADMIN_TOKEN, settings=settings
        )
        beacon.env["BEACON_PUBLIC_URL"] = beacon.url
        try:
            beacon.cli("migrate")
            await beacon.astart()
            first = beacon.spawn("worker", "deliveries", log="worker-0.log")
            await asyncio.to_thread(wait_for_workers, beacon, ["worker-0.log"])
            async with httpx.AsyncClient(base_url=beacon.url, timeout=30) as http:
                api = MessagingDriver(http, ADMIN)
                message_id = await api.message("order", ORDER, transactional=True)

                async def enough_taken() -> bool:
                    return len(mailbox.received) >= accepted_first

                async def first_recorded() -> bool:
                    sent = await api.deliveries(status="sent")
                    return len(sent) >= len(mailbox.received)

                ids = []
                for n in range(sends):
                    if n == accepted_first:
                        await wait_until(enough_taken, what="the first messages")
                        mailbox.holding = True
                    ids.append(
                        await api.send(
                            message_id, {"email": f"c{n}@example.com"}, params={"order_id": n}
                        )
                    )

                async def some_held() -> bool:
                    return mailbox.held > 0

                await wait_until(some_held, what="messages in flight")
                await wait_until(first_recorded, what="what was taken to be recorded")
                first.send_signal(signal.SIGKILL)
                first.wait(30)
                mailbox.released.set()  # what was in flight is refused: its sender is gone
                mailbox.holding = False
                beacon.spawn("worker", "deliveries", log="worker-1.log")
                await asyncio.to_thread(wait_for_workers, beacon, ["worker-1.log"])
                finals = [await api.settled(i) for i in ids]
        finally:
            beacon.kill_all()
            await delete_redis_keys(prefix)

    assert [d["status"] for d in finals] == ["sent"] * sends, [d["status_reason"] for d in finals]
    per_recipient = Counter(str(m["To"]) for m in mailbox.received)
    assert sorted(per_recipient) == sorted(f"c{n}@example.com" for n in range(sends))
    assert set(per_recipient.values()) == {1}
    interrupted = [d for d in finals if any(s["status"] == "interrupted" for s in d["timeline"])]
    assert interrupted, "no message was in flight when the worker was killed"
    assert all(d["attempts"] == 2 for d in interrupted)


@pytest.mark.postgres
@pytest.mark.redis
async def test_activity_reaches_receivers_that_are_down_failing_or_slow_once_per_webhook_id(
    scale_out_url: str, tmp_path: Path
) -> None:
    sends = 6
    prefix = f"beacon-messaging-e2e-{uuid.uuid4().hex}"
    down_port = free_port()
    async with (
        smtp_mailbox() as mailbox,
        running_receiver() as failing,
        running_receiver() as slow,
    ):
        failing.answer(500, "broken")
        failing.answer(500, "still broken")

        async def too_slow(request: web.Request) -> web.StreamResponse:
            await asyncio.sleep(3)
            return web.Response(text="late")

        slow.answer_with(too_slow)
        settings = messaging_settings(
            mailbox.port, bus_url=REDIS_URL or "", bus_prefix=prefix, webhook_timeout_seconds="1"
        )
        settings["delivery_channels"] = "{}"  # capture: each send is one DELIVERED activity
        beacon = BeaconProcess.on(
            scale_out_url, tmp_path, admin_token=ADMIN_TOKEN, settings=settings
        )
        beacon.env["BEACON_PUBLIC_URL"] = beacon.url
        down = Receiver()
        try:
            beacon.cli("migrate")
            await beacon.astart()
            beacon.spawn("worker", log="worker-0.log")
            await asyncio.to_thread(wait_for_workers, beacon, ["worker-0.log"])
            async with httpx.AsyncClient(base_url=beacon.url, timeout=60) as http:
                api = MessagingDriver(http, ADMIN)
                endpoints = {
                    name: await api.endpoint(url)
                    for name, url in (
                        ("down", f"http://127.0.0.1:{down_port}/hook"),
                        ("failing", failing.url()),
                        ("slow", slow.url()),
                    )
                }
                message_id = await api.message("note", ORDER)
                ids = [
                    await api.send(
                        message_id, {"email": f"r{n}@example.com"}, params={"order_id": n}
                    )
                    for n in range(sends)
                ]
                instances = {(await api.settled(i))["message_instance_id"] for i in ids}

                async def tried(endpoint_id: str, attempts: int) -> bool:
                    page = await api.call("GET", f"/api/webhooks/{endpoint_id}/messages")
                    items = page["items"]
                    return sum(m["item_count"] for m in items) == sends and all(
                        m["attempts"] >= attempts and m["status"] != "sending" for m in items
                    )

                down_id = endpoints["down"][0]
                await wait_until(partial(tried, down_id, 1), what="the first attempts")
                for attempt, step in enumerate((6, 330, 1980), start=2):
                    await api.advance(step)
                    await wait_until(partial(tried, down_id, attempt), what=f"attempt {attempt}")
                async with receiver_on(down_port, down):
                    await api.advance(7920)

                    async def all_delivered() -> bool:
                        for endpoint_id, _ in endpoints.values():
                            page = await api.call("GET", f"/api/webhooks/{endpoint_id}/messages")
                            if {m["status"] for m in page["items"]} != {"delivered"}:
                                return False
                        return True

                    await wait_until(all_delivered, what="every endpoint's activity delivered")
        finally:
            beacon.kill_all()
            await delete_redis_keys(prefix)

    for name, receiver in (("down", down), ("failing", failing), ("slow", slow)):
        elements = verified_elements(receiver, endpoints[name][1])
        ids_per_instance: dict[int, set[str]] = {}
        for webhook_id, element in elements:
            check_esputnik(element)
            ids_per_instance.setdefault(element["messageInstanceId"], set()).add(webhook_id)
        assert set(ids_per_instance) == instances, name
        assert all(len(w) == 1 for w in ids_per_instance.values()), (name, ids_per_instance)
