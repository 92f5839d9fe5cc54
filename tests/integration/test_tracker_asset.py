"""`GET /tracker.js` serves the web tracker, and `/track` and `/collect` apply each source's
`allowed_origins` to browsers: an origin not listed gets 403 and nothing is stored.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from importlib.resources import files

import httpx
import pytest

from beacon.core import jsonio
from tests.integration.conftest import ADMIN, Beacon, all_events, create_source, track_body

SHOP = "https://shop.example"
EVIL = "https://evil.example"
TRACKER = files("beacon.tracker").joinpath("tracker.js").read_bytes()


def event(n: int) -> dict[str, object]:
    return {"id": f"event-{n}", "type": "add-to-cart", "properties": {"n": n}}


@pytest.fixture
async def shop(beacon: Beacon) -> AsyncIterator[str]:
    """A source that takes browser events from the shop's origin only."""
    await create_source(beacon.client, "shop", allowed_origins=[SHOP])
    yield "shop"


# --- /tracker.js --------------------------------------------------------------------------------


async def test_tracker_is_served_as_cacheable_javascript(client: httpx.AsyncClient) -> None:
    response = await client.get("/tracker.js", headers={"Accept-Encoding": "identity"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.content == TRACKER
    assert "max-age=3600" in response.headers["cache-control"]
    assert response.headers["cache-control"].startswith("public")
    assert response.headers["etag"].startswith('"')
    assert "content-encoding" not in response.headers


async def test_tracker_is_small_and_dependency_free() -> None:
    source = TRACKER.decode()
    assert len(TRACKER) < 12 * 1024, f"tracker.js grew to {len(TRACKER)} bytes"
    for dependency in ("import ", "require(", "sourceMappingURL"):
        assert dependency not in source


async def test_tracker_is_gzipped_for_clients_that_accept_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/tracker.js", headers={"Accept-Encoding": "gzip"})

    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["vary"]
    assert response.content == TRACKER  # httpx decoded it
    assert int(response.headers["content-length"]) == len(gzip.compress(TRACKER, 9, mtime=0))


async def test_tracker_revalidates_with_its_etag(client: httpx.AsyncClient) -> None:
    etag = (await client.get("/tracker.js")).headers["etag"]

    unchanged = await client.get("/tracker.js", headers={"If-None-Match": etag})
    weak = await client.get("/tracker.js", headers={"If-None-Match": f'"other", W/{etag}'})
    stale = await client.get("/tracker.js", headers={"If-None-Match": '"something-else"'})

    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["etag"] == etag
    assert "max-age" in unchanged.headers["cache-control"]
    assert weak.status_code == 304
    assert stale.status_code == 200
    assert stale.content == TRACKER


async def test_tracker_answers_head(client: httpx.AsyncClient) -> None:
    response = await client.head("/tracker.js")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")


# --- CORS per source -----------------------------------------------------------------------------


async def test_allowed_origin_gets_its_origin_echoed(beacon: Beacon, shop: str) -> None:
    response = await beacon.client.post(
        "/track", json=track_body(shop, [event(1)]), headers={"Origin": SHOP}
    )

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == SHOP
    assert response.headers["vary"] == "Origin"
    [stored] = await beacon.events(source_id=shop)
    assert stored["external_id"] == "event-1"


async def test_disallowed_origin_is_refused_and_nothing_is_stored(
    beacon: Beacon, shop: str
) -> None:
    response = await beacon.client.post(
        "/track", json=track_body(shop, [event(1)]), headers={"Origin": EVIL}
    )

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "origin_not_allowed"
    assert EVIL in error["message"]
    assert error["problems"] == [
        {
            "loc": ["headers", "origin"],
            "msg": f"{EVIL} is not one of the source's allowed origins",
            "type": "origin_not_allowed",
        }
    ]
    # Readable by the page, so a tracker drops the batch instead of retrying it forever.
    assert response.headers["access-control-allow-origin"] == EVIL
    assert await beacon.events() == []
    assert await beacon.profile_count() == 0
    assert await beacon.dead_letters() == []


async def test_disallowed_origin_is_refused_on_collect(beacon: Beacon, shop: str) -> None:
    refused = await beacon.client.post(f"/collect/coupon/{shop}", json={}, headers={"Origin": EVIL})
    allowed = await beacon.client.post(f"/collect/coupon/{shop}", json={}, headers={"Origin": SHOP})

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "origin_not_allowed"
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == SHOP
    assert len(await beacon.events(source_id=shop)) == 1


async def test_gzipped_track_body_is_screened_too(beacon: Beacon, shop: str) -> None:
    body = gzip.compress(jsonio.dumps(track_body(shop, [event(1)])))
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}

    refused = await beacon.client.post("/track", content=body, headers={**headers, "Origin": EVIL})
    allowed = await beacon.client.post("/track", content=body, headers={**headers, "Origin": SHOP})

    assert refused.status_code == 403
    assert allowed.status_code == 200, allowed.text
    assert [e["external_id"] for e in await beacon.events()] == ["event-1"]


async def test_body_read_for_the_check_reaches_the_endpoint_whole(
    beacon: Beacon, shop: str
) -> None:
    """A body streamed in many chunks is read once to find its source, then replayed."""
    raw = jsonio.dumps(track_body(shop, [event(n) for n in range(50)]))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 100):
            yield raw[start : start + 100]

    response = await beacon.client.post("/track", content=chunks(), headers={"Origin": SHOP})

    assert response.status_code == 200, response.text
    assert len(await beacon.events(source_id=shop)) == 50


async def test_oversized_body_keeps_its_413(beacon: Beacon, shop: str) -> None:
    raw = jsonio.dumps(track_body(shop, [{"type": "big", "properties": {"x": "y" * 600_000}}]))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 64 * 1024):
            yield raw[start : start + 64 * 1024]

    response = await beacon.client.post("/track", content=chunks(), headers={"Origin": EVIL})

    assert response.status_code == 413
    assert await beacon.events() == []


async def test_unreadable_body_keeps_its_own_error(beacon: Beacon, shop: str) -> None:
    response = await beacon.client.post("/track", content=b"{not json", headers={"Origin": EVIL})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


async def test_origins_compare_as_browsers_send_them(beacon: Beacon) -> None:
    await create_source(beacon.client, "shop", allowed_origins=["HTTPS://Shop.Example/"])

    response = await beacon.client.post(
        "/track", json=track_body("shop", [event(1)]), headers={"Origin": SHOP}
    )

    assert response.status_code == 200, response.text


async def test_empty_allowed_origins_allow_any_origin(beacon: Beacon) -> None:
    for n, origin in enumerate((SHOP, EVIL, "null", "http://localhost:3000")):
        response = await beacon.client.post(
            "/track", json=track_body(beacon.source_id, [event(n)]), headers={"Origin": origin}
        )
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == origin
        assert response.headers["vary"] == "Origin"
    assert len(await beacon.events()) == 4


async def test_requests_without_origin_are_not_browsers_and_pass(beacon: Beacon, shop: str) -> None:
    response = await beacon.client.post("/track", json=track_body(shop, [event(1)]))

    assert response.status_code == 200, response.text
    assert "access-control-allow-origin" not in response.headers


async def test_origins_changed_in_the_admin_api_apply(beacon: Beacon, shop: str) -> None:
    patched = await beacon.client.patch(
        f"/api/sources/{shop}", json={"allowed_origins": [EVIL]}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.text

    response = await beacon.client.post(
        "/track", json=track_body(shop, [event(1)]), headers={"Origin": SHOP}
    )

    assert response.status_code == 403


async def test_one_restricted_source_leaves_the_others_open(beacon: Beacon, shop: str) -> None:
    response = await beacon.client.post(
        "/track", json=track_body(beacon.source_id, [event(1)]), headers={"Origin": EVIL}
    )

    assert response.status_code == 200, response.text
    assert await all_events(beacon.client, source_id=beacon.source_id)


@pytest.mark.parametrize("path", ["/track", "/collect/coupon/shop"])
async def test_preflight_is_answered_for_any_origin(
    client: httpx.AsyncClient, shop: str, path: str
) -> None:
    """A preflight has no body, so it cannot name a source: the POST itself is screened."""
    for origin in (SHOP, EVIL):
        response = await client.options(
            path,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, x-custom",
            },
        )
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == origin
        assert "POST" in response.headers["access-control-allow-methods"]
        assert response.headers["access-control-allow-headers"] == "content-type, x-custom"
        assert response.headers["vary"] == "Origin"
