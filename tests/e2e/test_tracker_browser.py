"""The web tracker in headless Chromium against a real `python -m beacon serve` process.

Test pages come from a second local HTTP server on another port, so every request from the
tracker to Beacon is cross-origin and the browser enforces CORS for real. The source the pages
post to allows only that server's origin. Chromium is Debian's (`/usr/bin/chromium`), driven by
Playwright; a browser is never downloaded. Tests wait by polling the admin API, with deadlines.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.beacon_process import DEADLINE_S, POLL_S, BeaconProcess
from tests.integration.test_delivery_outbound import running_receiver
from tests.integration.test_delivery_web_push import Browser as PushKeys
from tests.integration.test_delivery_web_push import vapid_keys
from tests.messaging_driver import MessagingDriver

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing: `apt-get install chromium` (CI's .ci/run does)",
    ),
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ADMIN_TOKEN = "e2e-admin-token"
SOURCE_ID = "shop"
TITLE = "Chaussures été | Shop"
TRACKER_JS = files("beacon.tracker").joinpath("tracker.js").read_bytes()
# The snippet of the README: calls made before tracker.js has loaded wait in a queue.
SNIPPET = (
    "window.beacon=window.beacon||[];"
    '["init","track","identify","page","flush","reset"].forEach(function(m){'
    "beacon[m]=beacon[m]||function(){beacon.push([m].concat([].slice.call(arguments)))}});"
)

T = TypeVar("T")


async def until(check: Callable[[], Awaitable[T]], what: str, timeout: float = DEADLINE_S) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(POLL_S)


async def until_true(predicate: Callable[[], bool], what: str) -> None:
    """Wait until `predicate()` holds (it reads what browser callbacks recorded)."""

    async def check() -> bool:
        return predicate()

    await until(check, what)


# --- Beacon, as an operator runs it ------------------------------------------------------------


@dataclass
class BeaconServer(BeaconProcess):
    """The Beacon the pages send to, with the admin API calls the tests make of it."""

    write_key: str = ""

    async def events(self, source_id: str = SOURCE_ID) -> list[dict[str, Any]]:
        """Every event the source has stored, through the admin API."""
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0) as http:
            response = await http.get(
                "/api/events",
                params={"source_id": source_id, "limit": 1000},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["next_cursor"] is None
        items: list[dict[str, Any]] = page["items"]
        return items

    async def server_event(self, event: dict[str, Any]) -> str:
        """Send `event` as the shop's back-end does, by `POST /api/v1/events`; return its id."""
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0) as http:
            response = await http.post(
                "/api/v1/events",
                json=event,
                headers={"Authorization": f"Bearer {self.write_key}"},
            )
        assert response.status_code == 200, response.text
        event_id: str = event["id"]
        return event_id

    async def sessions_of(self, profile_id: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0) as http:
            response = await http.get(
                f"/api/profiles/{profile_id}/sessions",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
        assert response.status_code == 200, response.text
        sessions: list[dict[str, Any]] = response.json()
        return sessions

    async def wait_for_events(self, *external_ids: str) -> list[dict[str, Any]]:
        """Wait until events with these client ids are stored; return every stored event."""

        async def stored() -> list[dict[str, Any]]:
            events = await self.events()
            return events if set(external_ids) <= {e["external_id"] for e in events} else []

        return await until(stored, f"events {external_ids}")


# --- the website: a second origin ---------------------------------------------------------------


@dataclass
class Site:
    """Static pages on their own port; `pages` maps a path to its HTML."""

    port: int
    pages: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path


@contextlib.contextmanager
def serve_site() -> Iterator[Site]:
    site = Site(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/tracker.js":  # the same file Beacon serves, for pages that need it
                body, content_type = TRACKER_JS, "text/javascript"
            elif path in site.pages:
                body = site.pages[path].encode()
                kind = "text/javascript" if path.endswith(".js") else "text/html"
                content_type = f"{kind}; charset=utf-8"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
        thread.join(DEADLINE_S)


def shop_page(tracker_src: str, *, calls: str = "", **attributes: str) -> str:
    """A page loading the tracker asynchronously after the snippet, with `calls` queued."""
    data = " ".join(
        f'data-{name.replace("_", "-")}="{value}"' for name, value in attributes.items()
    )
    return (
        f"<!doctype html><html><head><title>{TITLE}</title>"
        f"<script>{SNIPPET}{calls}</script>"
        f'<script src="{tracker_src}" data-source="{SOURCE_ID}" {data} async></script>'
        "</head><body><h1>Shoes</h1></body></html>"
    )


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def site() -> Iterator[Site]:
    with serve_site() as served:
        yield served


@pytest.fixture
def beacon_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    """More settings of the Beacon a test runs: `indirect` parameters set them."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
async def beacon(
    site: Site, tmp_path: Path, beacon_settings: dict[str, str]
) -> AsyncIterator[BeaconServer]:
    """A running Beacon on SQLite whose source `shop` takes browser events from `site` only."""
    database_url = f"sqlite:///{tmp_path / 'beacon.db'}"
    server = BeaconServer.on(
        database_url, tmp_path, admin_token=ADMIN_TOKEN, settings=beacon_settings
    )
    try:
        server.cli("migrate")
        created = server.cli(
            "sources", "create", "Shop", "--id", SOURCE_ID, "--origin", site.origin
        )
        server.write_key = created.split("write key ", 1)[1].split(")", 1)[0]
        await server.astart()
        yield server
    finally:
        server.kill()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=DEADLINE_S * 1000
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile (its own localStorage): one device."""
    fresh = await browser.new_context()
    fresh.set_default_timeout(DEADLINE_S * 1000)
    try:
        yield fresh
    finally:
        await fresh.close()


async def open_page(context: BrowserContext, url: str) -> Page:
    page = await context.new_page()
    await page.goto(url)
    await loaded(page)
    return page


async def loaded(page: Page) -> None:
    await page.wait_for_function("() => window.beacon && window.beacon.version")


async def stored_value(page: Page, name: str) -> Any:
    """What the tracker keeps in localStorage under `beacon.{name}`, decoded."""
    raw = await page.evaluate("(name) => localStorage.getItem('beacon.' + name)", name)
    return None if raw is None else json.loads(raw)


async def queue_ids(page: Page) -> list[str]:
    return [item["e"]["id"] for item in (await stored_value(page, "queue") or [])]


async def queue_is_empty(page: Page) -> bool:
    return await queue_ids(page) == []


def by_type(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        found.setdefault(event["type"], []).append(event)
    return found


def tracked_id(page: Page, script: str) -> Awaitable[str]:
    """Run `script` (which calls the tracker once) and return the id of the event it queued."""
    return page.evaluate(
        f"""() => {{
            {script};
            const queue = JSON.parse(localStorage.getItem('beacon.queue'));
            return queue[queue.length - 1].e.id;
        }}"""
    )


# --- the tests -----------------------------------------------------------------------------------


async def test_page_events_reach_one_profile_and_session_with_the_page_context(
    beacon: BeaconServer, site: Site, context: BrowserContext
) -> None:
    site.pages["/shoes"] = shop_page(
        f"{beacon.url}/tracker.js",
        calls='beacon.track("queued-before-load", {n: 0});',
        flush_interval="200",
    )
    page = await open_page(context, site.url("/shoes"))
    await page.evaluate(
        """() => {
            beacon.page({section: "shoes"});
            beacon.track("add-to-cart", {sku: "A-1", price: 59.9, tags: ["red"]});
            beacon.track("add-to-cart", {sku: "B-2", price: 19.9});
        }"""
    )

    async def four_stored() -> list[dict[str, Any]]:
        events = await beacon.events()
        return events if len(events) >= 4 else []

    events = await until(four_stored, "4 events")
    await until(lambda: queue_is_empty(page), "the tracker to read every answer")
    profile_id = await stored_value(page, "profile")

    assert len(events) == 4
    types = by_type(events)
    assert sorted(types) == ["add-to-cart", "page-view", "queued-before-load"]
    assert {e["profile_id"] for e in events} == {profile_id}
    assert {e["session_id"] for e in events} == {(await stored_value(page, "session"))["id"]}
    assert sorted(e["properties"]["sku"] for e in types["add-to-cart"]) == ["A-1", "B-2"]
    assert types["queued-before-load"][0]["properties"] == {"n": 0}
    [page_view] = types["page-view"]
    assert page_view["properties"] == {
        "url": site.url("/shoes"),
        "path": "/shoes",
        "title": TITLE,
        "referrer": "",
        "section": "shoes",
    }
    # Every event has the client id the tracker gave it, and the page's context.
    assert len({uuid.UUID(e["external_id"]) for e in events}) == 4
    for event in events:
        context_ = event["context"]
        assert context_["page"] == {
            "url": site.url("/shoes"),
            "path": "/shoes",
            "title": TITLE,
            "referrer": "",
        }
        assert "HeadlessChrome" in context_["browser"]["user_agent"]
        assert context_["browser"]["language"]
        assert context_["browser"]["timezone"]
        assert context_["screen"]["width"] > 0
        assert context_["screen"]["height"] > 0


async def test_profile_persists_across_reload_and_the_session_rolls_over_after_30_minutes(
    beacon: BeaconServer, site: Site, context: BrowserContext
) -> None:
    site.pages["/"] = shop_page(f"{beacon.url}/tracker.js", flush_interval="100")
    page = await open_page(context, site.url("/"))
    first = await tracked_id(page, "beacon.track('visit', {n: 1})")
    await beacon.wait_for_events(first)
    await until(lambda: stored_value(page, "profile"), "the profile id from the response")

    await page.reload()
    await loaded(page)
    second = await tracked_id(page, "beacon.track('visit', {n: 2})")
    await beacon.wait_for_events(second)

    # 31 minutes without events: the next event opens a new session of the same profile.
    await page.evaluate(
        """() => {
            const s = JSON.parse(localStorage.getItem('beacon.session'));
            s.at = Date.now() - 31 * 60 * 1000;
            localStorage.setItem('beacon.session', JSON.stringify(s));
        }"""
    )
    third = await tracked_id(page, "beacon.track('visit', {n: 3})")
    events = {e["external_id"]: e for e in await beacon.wait_for_events(third)}

    assert events[first]["profile_id"] is not None
    assert events[first]["profile_id"] == events[second]["profile_id"]
    assert events[second]["profile_id"] == events[third]["profile_id"]
    assert events[first]["session_id"] == events[second]["session_id"]
    assert events[third]["session_id"] != events[second]["session_id"]


async def test_events_queued_while_the_server_is_down_are_delivered_once_it_is_back(
    beacon: BeaconServer, site: Site, context: BrowserContext
) -> None:
    # The page loads the tracker from its own server, so it still loads while Beacon is down.
    site.pages["/"] = shop_page("/tracker.js", host=beacon.url, flush_interval="100")
    page = await open_page(context, site.url("/"))
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    before = await tracked_id(page, "beacon.track('before', {})")
    await beacon.wait_for_events(before)

    beacon.kill()
    down = [await tracked_id(page, f"beacon.track('while-down', {{n: {n}}})") for n in (1, 2)]
    await until_true(lambda: bool(failed), "a failed attempt to send")
    # The queue survives a reload, and the tracker on the new page sends it too.
    await page.reload()
    await loaded(page)
    failed.clear()
    down.append(await tracked_id(page, "beacon.track('while-down', {n: 3})"))
    await until_true(lambda: bool(failed), "a failed attempt after the reload")
    left_over = await stored_value(page, "queue")
    assert [item["e"]["id"] for item in left_over] == down

    await beacon.astart()
    await beacon.wait_for_events(*down)
    await until(lambda: queue_is_empty(page), "the tracker to empty its queue")

    # A retry of the same batch (say the answer was lost) is stored once: the event ids.
    await page.evaluate(
        "(queue) => { localStorage.setItem('beacon.queue', JSON.stringify(queue)); }", left_over
    )
    await page.evaluate("() => beacon.flush()")
    await until(lambda: queue_is_empty(page), "the retried batch to be acknowledged")

    events = await beacon.events()
    copies = Counter(e["external_id"] for e in events)
    assert copies == Counter([before, *down])
    assert len({e["profile_id"] for e in events}) == 1


async def test_offline_browser_keeps_events_until_it_is_back_online(
    beacon: BeaconServer, site: Site, context: BrowserContext
) -> None:
    site.pages["/"] = shop_page(f"{beacon.url}/tracker.js", flush_interval="100")
    page = await open_page(context, site.url("/"))

    await context.set_offline(True)
    ids = [await tracked_id(page, f"beacon.track('offline', {{n: {n}}})") for n in range(3)]
    await asyncio.sleep(0.5)  # several flush intervals: nothing can leave
    assert await queue_ids(page) == ids
    assert await beacon.events() == []
    await context.set_offline(False)  # the "online" event sends at once

    events = await beacon.wait_for_events(*ids)
    assert sorted(e["properties"]["n"] for e in events) == [0, 1, 2]
    await until(lambda: queue_is_empty(page), "the tracker to empty its queue")


async def test_send_beacon_on_page_hide_delivers_the_last_events(
    beacon: BeaconServer, site: Site, context: BrowserContext
) -> None:
    # A minute between flushes: only leaving the page can send these events.
    count_beacons = (
        "const send = navigator.sendBeacon.bind(navigator);"
        "navigator.sendBeacon = (url, body) => {"
        "  localStorage.setItem('test.beacons', String(+localStorage.getItem('test.beacons') + 1));"
        "  return send(url, body); };"
    )
    site.pages["/cart"] = shop_page(
        f"{beacon.url}/tracker.js", calls=count_beacons, flush_interval="60000"
    )
    site.pages["/elsewhere"] = "<!doctype html><title>elsewhere</title><p>bye</p>"
    page = await open_page(context, site.url("/cart"))
    ids = [await tracked_id(page, f"beacon.track('last-words', {{n: {n}}})") for n in (1, 2)]
    await asyncio.sleep(0.3)
    assert await beacon.events() == []

    await page.goto(site.url("/elsewhere"))  # a page without the tracker

    events = await beacon.wait_for_events(*ids)
    assert len(events) == 2
    # One beacon: `visibilitychange` and `pagehide` both fire, the events go once.
    assert await page.evaluate("() => localStorage.getItem('test.beacons')") == "1"
    # A beacon's answer is unknown, so the events stay queued; the next page with the tracker
    # sends them again and Beacon, knowing their ids, stores nothing twice.
    assert await queue_ids(page) == ids
    await page.goto(site.url("/cart"))
    await until(lambda: queue_is_empty(page), "the next page to settle the queue")
    assert Counter(e["external_id"] for e in await beacon.events()) == Counter(ids)


async def test_a_page_on_an_origin_the_source_does_not_allow_is_refused(
    beacon: BeaconServer, site: Site, context: BrowserContext
) -> None:
    """`localhost` is another origin than the allowed `127.0.0.1`: 403, and the tracker drops
    the batch instead of retrying it."""
    site.pages["/"] = shop_page(f"{beacon.url}/tracker.js", flush_interval="100")
    statuses: list[int] = []
    page = await context.new_page()
    page.on(
        "response",
        lambda response: statuses.append(response.status) if "/track" in response.url else None,
    )
    await page.goto(f"http://localhost:{site.port}/")
    await loaded(page)

    await tracked_id(page, "beacon.track('refused', {})")

    await until_true(lambda: 403 in statuses, "the 403")
    await until(lambda: queue_is_empty(page), "the tracker to drop the refused batch")
    assert await beacon.events() == []


async def test_identify_is_sent_as_an_identify_event(
    beacon: BeaconServer, site: Site, context: BrowserContext
) -> None:
    site.pages["/"] = shop_page(f"{beacon.url}/tracker.js", flush_interval="100")
    page = await open_page(context, site.url("/"))
    anonymous = await tracked_id(page, "beacon.track('browse', {})")
    identify = await tracked_id(
        page, "beacon.identify('user-42', {email: 'ada@example.com', plan: 'pro', seats: 3})"
    )

    events = {e["external_id"]: e for e in await beacon.wait_for_events(anonymous, identify)}

    assert events[identify]["type"] == "identify"
    assert events[identify]["properties"] == {
        "user_id": "user-42",
        "traits": {"email": "ada@example.com", "plan": "pro", "seats": 3},
    }
    assert events[identify]["profile_id"] == events[anonymous]["profile_id"]


async def test_person_tracked_anonymously_then_identified_ends_as_one_profile_with_all_events(
    beacon: BeaconServer, site: Site, browser: Browser
) -> None:
    """Issue 4's acceptance: user-42 is known from another device; browsing anonymously on this
    one, identifying with an email, then the shop's back-end sending events by that email alone,
    leaves one profile holding every event and both devices' sessions."""
    site.pages["/"] = shop_page(f"{beacon.url}/tracker.js", flush_interval="100")
    laptop = await browser.new_context()
    phone = await browser.new_context()
    try:
        on_laptop = await open_page(laptop, site.url("/"))
        known = [
            await tracked_id(on_laptop, "beacon.identify('user-42', {plan: 'pro'})"),
            await tracked_id(on_laptop, "beacon.track('laptop-visit', {})"),
        ]
        await beacon.wait_for_events(*known)

        on_phone = await open_page(phone, site.url("/"))
        anonymous = [
            await tracked_id(on_phone, "beacon.page()"),
            await tracked_id(on_phone, "beacon.track('add-to-cart', {sku: 'A-1'})"),
        ]
        await beacon.wait_for_events(*anonymous)
        anonymous_profile = await until(
            lambda: stored_value(on_phone, "profile"), "the phone's anonymous profile"
        )
        identified = [
            await tracked_id(on_phone, "beacon.identify('user-42', {email: 'ada@example.com'})"),
            await tracked_id(on_phone, "beacon.track('checkout', {})"),
        ]
        await beacon.wait_for_events(*identified)
        shipped = await beacon.server_event(
            {"id": str(uuid.uuid4()), "type": "SHIPPING_STATUS", "email": "ada@example.com"}
        )
        events = await beacon.wait_for_events(shipped)
        # Every answer read, so the profile ids the trackers keep are final.
        await until(lambda: queue_is_empty(on_laptop), "the laptop to settle its queue")
        await until(lambda: queue_is_empty(on_phone), "the phone to settle its queue")
        phone_profile = await stored_value(on_phone, "profile")
        laptop_profile = await stored_value(on_laptop, "profile")
    finally:
        await laptop.close()
        await phone.close()

    tracked = [e for e in events if e["external_id"] is not None]
    assert {e["external_id"] for e in tracked} == {*known, *anonymous, *identified, shipped}
    assert {e["profile_id"] for e in tracked} == {laptop_profile}
    sessions = {e["session_id"] for e in tracked if e["session_id"] is not None}
    assert len(sessions) == 2  # one per device
    assert {s["id"] for s in await beacon.sessions_of(laptop_profile)} == sessions
    assert anonymous_profile != laptop_profile
    assert phone_profile == laptop_profile  # the tracker took the survivor's id from Beacon
    # Beacon records the merge itself, under its own `system` source.
    [merged] = [e for e in await beacon.events("system") if e["type"] == "profile.merged"]
    assert merged["profile_id"] == laptop_profile
    assert anonymous_profile in merged["properties"].values()


# --- Web Push ------------------------------------------------------------------------------------

PUSH_PRIVATE_KEY, PUSH_PUBLIC_KEY = vapid_keys()
WEB_PUSH = {
    "delivery_channels": json.dumps({"push": "web_push"}),
    "channel_settings": json.dumps(
        {"web_push": {"vapid_private_key": PUSH_PRIVATE_KEY, "vapid_subject": "mailto:a@shop.test"}}
    ),
    "outbound_allow_networks": "127.0.0.1/32",
}
# The browser's push service is its vendor's (Google's for Chromium), out of reach here: the page
# stands in for it, handing out a subscription whose endpoint is the test's receiver and whose
# keys the test holds. Everything else is the browser's own: the service worker, the fetch of
# Beacon's key across origins, the tracker's queue.
PUSH_SERVICE = """
    window.askedKeys = [];
    window.pushSubscription = null;
    window.earlier = null;  // a subscription the browser already holds: {key: [...], json}
    window.unsubscribed = [];
    PushManager.prototype.getSubscription = async function () {
        const held = window.earlier;
        if (!held) return null;
        const options = { applicationServerKey: new Uint8Array(held.key).buffer };
        const unsubscribe = async () => { window.unsubscribed.push(held.json); return true; };
        return { options, toJSON: () => held.json, unsubscribe };
    };
    PushManager.prototype.subscribe = async function (options) {
        window.askedKeys.push(Array.from(new Uint8Array(options.applicationServerKey)));
        const json = window.pushSubscription;
        return { options, toJSON: () => json, unsubscribe: async () => true };
    };
"""


@pytest.mark.parametrize("beacon_settings", [WEB_PUSH], indirect=True)
async def test_a_browser_subscribed_by_the_tracker_gets_a_push_message_only_it_can_read(
    beacon: BeaconServer, site: Site, context: BrowserContext
) -> None:
    keys = PushKeys()
    site.pages["/sw.js"] = "self.addEventListener('push', () => {});"
    site.pages["/"] = shop_page(f"{beacon.url}/tracker.js", flush_interval="100")
    await context.add_init_script(PUSH_SERVICE)
    async with running_receiver() as push_service:
        subscription = keys.subscription(push_service.url("/push/sub-1"))
        as_json = {
            "endpoint": subscription.endpoint,
            "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
        }
        page = await open_page(context, site.url("/"))
        await page.evaluate("(json) => { window.pushSubscription = json; }", as_json)

        subscribed = await page.evaluate("() => beacon.subscribePush({serviceWorker: '/sw.js'})")

        assert subscribed == as_json
        [asked] = await page.evaluate("() => window.askedKeys")
        assert bytes(asked) == base64.urlsafe_b64decode(PUSH_PUBLIC_KEY + "=")
        await until(lambda: queue_is_empty(page), "the subscription to be stored")
        profile_id = await stored_value(page, "profile")
        async with httpx.AsyncClient(base_url=beacon.url, timeout=10.0) as http:
            driver = MessagingDriver(http, {"Authorization": f"Bearer {ADMIN_TOKEN}"})
            profile = await driver.call("GET", f"/api/profiles/{profile_id}")
            assert profile["traits"]["push_subscription"] == as_json
            message = await driver.message(
                "back-in-stock", {"push": {"title": "Kettle is back", "body": "10% off today"}}
            )
            delivery_id = await driver.send(message, {"profile_id": profile_id})
            delivery = await driver.settled(delivery_id)

    assert delivery["status"] == "sent", delivery
    [request] = push_service.requests
    assert request.path == "/push/sub-1"
    assert request.headers["authorization"].endswith(f",k={PUSH_PUBLIC_KEY}")
    shown = keys.decrypt(request.body)
    assert isinstance(shown, dict)
    assert (shown["title"], shown["body"]) == ("Kettle is back", "10% off today")


async def test_without_web_push_the_tracker_subscribes_nobody(
    beacon: BeaconServer, site: Site, context: BrowserContext
) -> None:
    site.pages["/sw.js"] = "self.addEventListener('push', () => {});"
    site.pages["/"] = shop_page(f"{beacon.url}/tracker.js", flush_interval="100")
    await context.add_init_script(PUSH_SERVICE)
    page = await open_page(context, site.url("/"))

    subscribed = await page.evaluate("() => beacon.subscribePush({serviceWorker: '/sw.js'})")

    assert subscribed is None
    assert await page.evaluate("() => window.askedKeys") == []
    async with httpx.AsyncClient(base_url=beacon.url, timeout=10.0) as http:
        answer = await http.get("/tracker/push-key")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "push_not_configured"


@pytest.mark.parametrize("beacon_settings", [WEB_PUSH], indirect=True)
async def test_a_subscription_made_with_another_key_is_replaced_and_one_with_beacons_kept(
    beacon: BeaconServer, site: Site, context: BrowserContext
) -> None:
    site.pages["/sw.js"] = "self.addEventListener('push', () => {});"
    site.pages["/"] = shop_page(f"{beacon.url}/tracker.js", flush_interval="100")
    await context.add_init_script(PUSH_SERVICE)
    page = await open_page(context, site.url("/"))
    beacons_key = list(base64.urlsafe_b64decode(PUSH_PUBLIC_KEY + "="))
    fresh = {"endpoint": "https://push.test/fresh", "keys": {"p256dh": "p", "auth": "a"}}
    stale = {"endpoint": "https://push.test/stale", "keys": {"p256dh": "p", "auth": "a"}}
    kept = {"endpoint": "https://push.test/kept", "keys": {"p256dh": "p", "auth": "a"}}
    subscribe = "() => beacon.subscribePush({serviceWorker: '/sw.js'})"

    await page.evaluate(
        "([json, earlier]) => { window.pushSubscription = json; window.earlier = earlier; }",
        [fresh, {"key": [1] * 65, "json": stale}],
    )
    replaced = await page.evaluate(subscribe)
    held = {"key": beacons_key, "json": kept}
    await page.evaluate("(earlier) => { window.earlier = earlier; }", held)
    same = await page.evaluate(subscribe)

    assert replaced == fresh
    assert await page.evaluate("() => window.unsubscribed") == [stale]
    assert same == kept  # made with Beacon's key: nothing asked of the push service again
    assert len(await page.evaluate("() => window.askedKeys")) == 1
