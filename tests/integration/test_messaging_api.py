"""Messaging through its admin API, on both databases: templates checked when saved and
previewed, messages and transactional sends by any identity, the delivery log, a value missing
at send time, suppression and consent, the inbound bounce endpoint, and email through a real
SMTP server the test runs (temporary failures retried on the test clock, permanent ones
suppressing the address).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from beacon.deliveries.outlets import Outlets, OutletsError
from tests.conftest import make_settings
from tests.integration.conftest import ADMIN, ServeApp
from tests.integration.test_delivery_outbound import running_receiver
from tests.messaging_driver import MessagingDriver, smtp_mailbox, smtp_settings, wait_until

WELCOME = {
    "email": {
        "subject": "Welcome, {{ profile.traits.first_name | default('friend') }}",
        "text": "Your code: {{ context.code }}",
    },
    "sms": {"text": "Code {{ context.code }}"},
}
CONTENT_FORM = "application/x-www-form-urlencoded"


@asynccontextmanager
async def messaging(serve: ServeApp, **overrides: Any) -> AsyncIterator[MessagingDriver]:
    async with serve(clock="manual", **overrides) as served:
        yield MessagingDriver(served.client, ADMIN)


async def track_person(api: MessagingDriver, **fields: Any) -> str:
    """Send an event about a person through the server API (source `shop`, created the first
    time); return their profile id."""
    if (await api.client.get("/api/sources/shop", headers=api.admin)).status_code == 404:
        await api.call("POST", "/api/sources", 201, json={"id": "shop", "name": "shop"})
    key = (await api.call("GET", "/api/sources/shop"))["write_key"]
    response = await api.client.post(
        "/api/v1/events",
        json={"events": [{"type": "signup", **fields}]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    found = await api.call("GET", f"/api/profiles/by/user_id/{fields['user_id']}")
    return str(found["id"])


async def test_templates_with_problems_are_refused_naming_part_and_line(
    serve: ServeApp,
) -> None:
    async with messaging(serve) as api:
        broken = {
            "email": {
                "subject": "Hi {{ profile.nmae }}",
                "html": "<p>line one</p>\n{% if profile.traits.vip %}\n<p>{{ ''.__class__ }}",
                "text": "{{ secret_sauce }} {% include 'other' %}",
            },
            "fax": {"text": "?"},
        }
        refused = await api.client.post(
            "/api/templates", json={"name": "broken", "content": broken}, headers=ADMIN
        )
        unclosed = await api.client.post(
            "/api/templates",
            json={"name": "unclosed", "content": {"sms": {"text": "ok\n{% for x in y %}"}}},
            headers=ADMIN,
        )
        listed = await api.call("GET", "/api/templates")

    assert refused.status_code == 422
    problems = {(tuple(p["loc"]), p["line"], p["type"]) for p in refused.json()["detail"]}
    assert problems >= {
        (("body", "content", "email", "subject"), 1, "unknown_field"),
        (("body", "content", "email", "html"), 3, "syntax"),  # the unclosed if, at the end
        (("body", "content", "email", "text"), 1, "unknown_variable"),
        (("body", "content", "email", "text"), 1, "not_allowed"),
        (("body", "content", "fax"), None, "unknown_channel"),
    }, problems
    assert unclosed.status_code == 422
    [problem] = unclosed.json()["detail"]
    assert (problem["loc"][-1], problem["type"]) == ("text", "syntax")
    assert listed == []


async def test_a_sandbox_escape_is_refused(serve: ServeApp) -> None:
    async with messaging(serve) as api:
        refused = await api.client.put(
            "/api/templates/escape",
            json={"content": {"sms": {"text": "{{ context.x.__class__.__mro__ }}"}}},
            headers=ADMIN,
        )

    assert refused.status_code == 422
    assert refused.json()["detail"][0]["type"] == "unsafe"


async def test_a_template_is_versioned_and_previewed_with_a_sample_or_a_real_profile(
    serve: ServeApp,
) -> None:
    async with messaging(serve) as api:
        first = await api.call("PUT", "/api/templates/welcome", json={"content": WELCOME})
        second = await api.call("PUT", "/api/templates/welcome", json={"content": WELCOME})
        profile_id = await track_person(api, user_id="u-1", traits={"first_name": "Olena"})
        sample = await api.call(
            "POST", "/api/templates/welcome/preview", json={"context": {"code": "42"}}
        )
        real = await api.call(
            "POST",
            "/api/templates/welcome/preview",
            json={"to": {"user_id": "u-1"}, "context": {"code": "7"}},
        )
        missing = await api.client.post(
            "/api/templates/welcome/preview", json={"channel": "sms"}, headers=ADMIN
        )

    assert (first["version"], second["version"]) == (1, 2)
    assert sample["parts"] == {"subject": "Welcome, Ann", "text": "Your code: 42"}
    assert real["profile_id"] == profile_id
    assert real["parts"]["subject"] == "Welcome, Olena"
    assert missing.status_code == 422
    assert "context.code" in missing.json()["detail"][0]["msg"]


async def test_a_transactional_send_by_any_identity_is_kept_in_the_delivery_log(
    serve: ServeApp,
) -> None:
    async with messaging(serve) as api:
        profile_id = await track_person(
            api, user_id="u-7", email="olena@example.com", traits={"first_name": "Olena"}
        )
        message_id = await api.message("welcome", WELCOME, tag="onboarding")
        by_user = await api.send(
            message_id, {"user_id": "u-7"}, params={"code": "A1"}, idempotency_key="k-1"
        )
        again = await api.send(message_id, {"user_id": "u-7"}, idempotency_key="k-1")
        guest = await api.send(message_id, {"email": "Guest@Example.com"}, params={"code": "B2"})
        unknown = await api.client.post(
            f"/api/messages/{message_id}/send", json={"to": {"user_id": "nobody"}}, headers=ADMIN
        )
        no_message = await api.client.post(
            "/api/messages/999999/send", json={"to": {"user_id": "u-7"}}, headers=ADMIN
        )
        sent = await api.settled(by_user)
        await api.settled(guest)
        mine = await api.deliveries(profile_id=profile_id)
        everything = await api.deliveries(message_id=message_id, status="sent")
        first_page = await api.call("GET", "/api/deliveries", params={"limit": 1})

    assert again == by_user
    assert (unknown.status_code, no_message.status_code) == (404, 404)
    assert "no profile has user_id 'nobody'" in unknown.text
    assert sent["channel"] == "capture" and sent["recipient"] == "olena@example.com"
    assert sent["content"]["parts"] == {"subject": "Welcome, Olena", "text": "Your code: A1"}
    assert [step["status"] for step in sent["timeline"]] == ["queued", "sent"]
    assert [d["id"] for d in mine] == [by_user]
    assert {d["id"] for d in everything} == {by_user, guest}
    assert {d["recipient"] for d in everything} == {"olena@example.com", "guest@example.com"}
    assert all(d["message_tag"] == "onboarding" and d["contact_id"] for d in everything)
    assert len(first_page["items"]) == 1 and first_page["next_cursor"] is not None


async def test_a_value_missing_at_send_time_fails_the_delivery_visibly(serve: ServeApp) -> None:
    async with messaging(serve) as api:
        message_id = await api.message("welcome", WELCOME)
        delivery_id = await api.send(message_id, {"email": "ann@example.com"})
        failed = await api.settled(delivery_id)
        [event] = await api.system_events("message.undelivered")

    assert failed["status"] == "failed"
    assert "context.code" in failed["status_reason"]
    assert failed["content"] is None  # nothing rendered, nothing sent
    assert event["properties"]["statusDescription"] == failed["status_reason"]
    assert event["properties"]["deliveryId"] == delivery_id


async def test_suppressed_and_unconsented_people_are_skipped_with_the_reason(
    serve: ServeApp,
) -> None:
    async with messaging(serve) as api:
        news = await api.message("welcome", WELCOME)
        receipt = await api.call(
            "POST",
            "/api/messages",
            201,
            json={"template": "welcome", "channel": "email", "transactional": True},
        )
        for address, reason in (
            ("gone@example.com", "unsubscribed"),
            ("hard@example.com", "bounced"),
        ):
            await api.call(
                "POST", "/api/suppressions", 204, json={"address": address, "reason": reason}
            )
        params = {"code": "1"}
        skipped = await api.send(news, {"email": "gone@example.com"}, params=params)
        transactional = await api.send(receipt["id"], {"email": "gone@example.com"}, params=params)
        bounced = await api.send(receipt["id"], {"email": "hard@example.com"}, params=params)
        profile_id = await track_person(api, user_id="u-2", email="no@example.com")
        await api.call("PUT", f"/api/profiles/{profile_id}/consents/email", json={"granted": False})
        unconsented = await api.send(news, {"user_id": "u-2"}, params=params)
        no_phone = await api.send(
            await api.message("code", {"sms": WELCOME["sms"]}), {"user_id": "u-2"}, params=params
        )
        results = {
            name: await api.settled(delivery)
            for name, delivery in (
                ("skipped", skipped),
                ("transactional", transactional),
                ("bounced", bounced),
                ("unconsented", unconsented),
                ("no_phone", no_phone),
            )
        }

    outcome = {name: (d["status"], d["status_reason"]) for name, d in results.items()}
    assert outcome == {
        "skipped": ("skipped", "suppressed: gone@example.com unsubscribed"),
        "transactional": ("sent", "captured, not sent: a email message"),
        "bounced": ("skipped", "suppressed: hard@example.com bounced"),
        "unconsented": ("skipped", "email consent withdrawn"),
        "no_phone": ("skipped", "no recipient: the profile has no phone number"),
    }


async def test_bounces_and_complaints_need_a_write_key_and_a_well_formed_report(
    serve: ServeApp,
) -> None:
    async with messaging(serve) as api:
        await track_person(api, user_id="u-3", email="ann@example.com")
        key = (await api.call("GET", "/api/sources/shop"))["write_key"]
        message_id = await api.message("welcome", WELCOME)
        delivery_id = await api.send(message_id, {"user_id": "u-3"}, params={"code": "1"})
        await api.settled(delivery_id)
        auth = {"Authorization": f"Bearer {key}"}
        no_key = await api.client.post(
            "/api/v1/bounces", json={"type": "bounce", "email": "ann@example.com"}
        )
        bodies: list[Any] = [
            {"type": "bounce"},
            {"type": "opened", "email": "ann@example.com"},
            {"type": "bounce", "email": "not an address"},
            [],
        ]
        malformed = [
            await api.client.post("/api/v1/bounces", json=body, headers=auth) for body in bodies
        ]
        suppressions_before = await api.call("GET", "/api/suppressions")
        bounce = await api.call(
            "POST",
            "/api/v1/bounces",
            json={
                "type": "bounce",
                "email": "ann@example.com",
                "message_id": f"<{delivery_id}@example.com>",
                "description": "550 5.1.1 mailbox unavailable",
            },
            headers=auth,
        )
        complaint = await api.call(
            "POST",
            "/api/v1/bounces",
            json=[{"type": "complaint", "email": "ann@example.com", "delivery_id": delivery_id}],
            headers=auth,
        )
        after = await api.send(message_id, {"user_id": "u-3"}, params={"code": "2"})
        skipped = await api.settled(after)
        bounced = await api.delivery(delivery_id)
        undelivered = await api.system_events("message.undelivered")
        spam = await api.system_events("message.spam")

    assert no_key.status_code == 401
    assert [r.status_code for r in malformed] == [422, 422, 422, 422]
    assert malformed[0].json()["detail"][0]["loc"] == ["body", "BounceIn", "email"]
    assert suppressions_before == []
    assert (bounce, complaint) == ({"results": ["recorded"]}, {"results": ["recorded"]})
    assert bounced["status"] == "bounced"
    assert [s["status"] for s in bounced["timeline"]][-2:] == ["bounced", "spam"]
    [event] = undelivered
    assert event["properties"]["statusDescription"] == "550 5.1.1 mailbox unavailable"
    assert len(spam) == 1
    assert skipped["status_reason"] == "suppressed: ann@example.com bounced"


async def test_email_is_retried_on_the_test_clock_and_a_hard_failure_suppresses_the_address(
    serve: ServeApp,
) -> None:
    async with smtp_mailbox() as mailbox:
        mailbox.refuse["busy@example.com"] = ["451 4.3.2 try again later"]
        mailbox.refuse["gone@example.com"] = ["550 5.1.1 no such mailbox"] * 3
        channels = {"delivery_channels": {"email": "email"}}
        settings = {"channel_settings": {"email": smtp_settings(mailbox.port)}}
        async with messaging(serve, **channels, **settings) as api:
            message_id = await api.message("welcome", WELCOME)
            busy = await api.send(message_id, {"email": "busy@example.com"}, params={"code": "1"})
            gone = await api.send(message_id, {"email": "gone@example.com"}, params={"code": "2"})
            waiting = await api.settled(busy, "retrying")
            failed = await api.settled(gone)
            await api.advance(6)
            sent = await api.settled(busy)
            again = await api.send(message_id, {"email": "gone@example.com"}, params={"code": "3"})
            skipped = await api.settled(again)
            suppressed = await api.call("GET", "/api/suppressions")

    assert waiting["next_attempt_at"] is not None
    assert "451 4.3.2 try again later" in waiting["status_reason"]
    assert (sent["status"], sent["attempts"]) == ("sent", 2)
    assert [s["status"] for s in sent["timeline"]] == ["queued", "retrying", "sent"]
    [email] = mailbox.to("busy@example.com")
    assert email["Subject"] == "Welcome, friend"
    assert (failed["status"], skipped["status"]) == ("failed", "skipped")
    assert "550 5.1.1 no such mailbox" in failed["status_reason"]
    assert [(s["address"], s["reason"]) for s in suppressed] == [("gone@example.com", "bounced")]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"delivery_channels": {"email": "pigeon"}}, "no channel named 'pigeon'"),
        ({"delivery_channels": {"fax": "email"}}, "'fax' is no kind of message"),
        ({"delivery_channels": {"sms": "email"}}, "the email channel cannot send sms"),
        ({"channel_settings": {"email": {"host": "smtp.test"}}}, "'from_address' is required"),
        ({"outbound_allow_networks": ["intranet"]}, "'intranet' is not an IP network"),
    ],
)
def test_settings_that_cannot_send_are_refused_naming_them(
    settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(OutletsError, match=named):
        Outlets.from_settings(make_settings("sqlite:///unused.db", **settings))


async def test_the_channels_list_says_where_each_kind_goes(serve: ServeApp) -> None:
    async with messaging(serve) as api:
        listed = await api.call("GET", "/api/channels")

    assert listed["kinds"] == {
        "email": "capture",
        "sms": "capture",
        "push": "capture",
        "webhook": "capture",
    }
    assert {c["name"] for c in listed["channels"]} >= {"capture", "email", "sms", "webhook"}


async def test_tracking_links_are_refused_when_forged(client: httpx.AsyncClient) -> None:
    forged = await client.get(
        "/m/click/eyJwIjoiY2xpY2siLCJkIjoieCIsInUiOiJodHRwczovL2V2aWwifQ.AAAA"
    )
    pixel = await client.get("/m/open/garbage")

    assert forged.status_code == 404 and "location" not in forged.headers
    assert (pixel.status_code, pixel.headers["content-type"]) == (200, "image/gif")


async def test_an_erased_person_leaves_no_message_behind(serve: ServeApp) -> None:
    async with messaging(serve) as api:
        profile_id = await track_person(api, user_id="u-9", email="gone@example.com")
        message_id = await api.message("welcome", WELCOME)
        delivery_id = await api.send(message_id, {"user_id": "u-9"}, params={"code": "1"})
        await api.settled(delivery_id)
        await api.call("DELETE", f"/api/profiles/{profile_id}", 200)

        async def forgotten() -> bool:
            response = await api.client.get(f"/api/deliveries/{delivery_id}", headers=ADMIN)
            return response.status_code == 404

        await wait_until(forgotten, what="the delivery to be forgotten")
        left = await api.deliveries(profile_id=profile_id)

    assert left == []


async def test_an_sms_the_carrier_lost_comes_back_as_undelivered_through_its_signed_callback(
    serve: ServeApp,
) -> None:
    async with running_receiver() as twilio:
        for sid in ("SM1", "SM2"):
            twilio.answer(201, orjson.dumps({"sid": sid}), {"Content-Type": "application/json"})
        sms = {"account_sid": "AC1", "auth_token": "t", "from_number": "+15005550006"}
        sms["base_url"] = twilio.url("")
        settings = {
            "delivery_channels": {"sms": "sms"},
            "channel_settings": {"sms": sms},
            "outbound_allow_networks": ["127.0.0.0/8"],
            "public_url": "https://events.shop.test",
        }
        async with messaging(serve, **settings) as api:
            await track_person(api, user_id="u-1", traits={"phone": "+15005550001"})
            await track_person(api, user_id="u-2", traits={"phone": "+15005550002"})
            code = await api.message("code", {"sms": WELCOME["sms"]})
            lost = await api.settled(await api.send(code, {"user_id": "u-1"}, params={"code": "1"}))
            kept = await api.settled(await api.send(code, {"user_id": "u-2"}, params={"code": "2"}))
            callbacks = [parse_qs(r.body.decode())["StatusCallback"][0] for r in twilio.requests]
            paths = [urlsplit(url).path for url in callbacks]
            reports = [
                (paths[0], "MessageStatus=undelivered&ErrorCode=30005&MessageSid=SM1"),
                (paths[0], "MessageStatus=undelivered&ErrorCode=30005&MessageSid=SM1"),
                (paths[1], "MessageStatus=delivered&MessageSid=SM2"),
            ]
            for path, form in reports:
                answer = await api.client.post(
                    path, content=form, headers={"Content-Type": CONTENT_FORM}
                )
                assert answer.status_code == 204, answer.text
            forged = await api.client.post(
                paths[0] + "x", content=reports[0][1], headers={"Content-Type": CONTENT_FORM}
            )
            lost = await api.delivery(lost["id"])
            kept = await api.delivery(kept["id"])
            undelivered = await api.system_events("message.undelivered")
            suppressed = await api.call("GET", "/api/suppressions")

    assert all(url.startswith("https://events.shop.test/m/sms-status/") for url in callbacks)
    assert paths[0] != paths[1]
    assert forged.status_code == 404
    assert (lost["status"], lost["status_reason"]) == (
        "bounced",
        "undelivered: Twilio error 30005",
    )
    assert [s["status"] for s in kept["timeline"]][-1] == "handset_delivered"
    assert kept["status"] == "sent"
    [event] = undelivered  # the report came twice; the person lost one message
    assert event["properties"]["statusDescription"] == "undelivered: Twilio error 30005"
    assert event["properties"]["deliveryId"] == lost["id"]
    assert [(s["address"], s["reason"]) for s in suppressed] == [("+15005550001", "bounced")]


async def test_a_message_id_past_64_bits_is_refused_with_422_not_looked_up(
    serve: ServeApp,
) -> None:
    past = str(2**63)
    async with messaging(serve) as api:
        shown = await api.client.get(f"/api/messages/{past}", headers=ADMIN)
        sent = await api.client.post(
            f"/api/messages/{past}/send", json={"to": {"user_id": "u-7"}}, headers=ADMIN
        )
        listed = await api.client.get("/api/deliveries", params={"message_id": past}, headers=ADMIN)
        largest = await api.client.get(f"/api/messages/{2**63 - 1}", headers=ADMIN)

    for refused in (shown, sent, listed):
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["loc"][-1] == "message_id"
    assert largest.status_code == 404
