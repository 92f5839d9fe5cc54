"""The web tracker's public endpoints:

- `GET /tracker.js`: the tracker, with an ETag, caching headers and gzip when accepted;
- `GET /tracker/push-key`: the VAPID public key browsers subscribe to Web Push with
  (`beacon.subscribePush()`), `{"public_key": ...}`; 404 when push messages do not go
  through the `web_push` channel.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from beacon.core.errors import ClientError
from beacon.deliveries.channels.push import vapid_public_key
from beacon.settings import Settings

MEDIA_TYPE = "text/javascript; charset=utf-8"
# The URL carries no version, so caches keep it an hour and revalidate with the ETag after.
CACHE_CONTROL = "public, max-age=3600, stale-while-revalidate=86400"


@dataclass(frozen=True, slots=True)
class Asset:
    plain: bytes
    gzipped: bytes
    etag: str


@cache
def tracker_asset() -> Asset:
    """Read `tracker.js` once; gzip it once."""
    plain = files("beacon.tracker").joinpath("tracker.js").read_bytes()
    return Asset(
        plain=plain,
        gzipped=gzip.compress(plain, compresslevel=9, mtime=0),
        etag=f'"{hashlib.sha256(plain).hexdigest()[:20]}"',
    )


async def tracker_js(request: Request) -> Response:
    asset = tracker_asset()
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": asset.etag, "Vary": "Accept-Encoding"}
    if _matches(request.headers.get("if-none-match"), asset.etag):
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=MEDIA_TYPE, headers=headers)
    return Response(asset.plain, media_type=MEDIA_TYPE, headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Return whether If-None-Match names `etag` (weak comparison, as RFC 9110 asks)."""
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags


async def push_key(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    key = _push_key(settings)
    if key is None:
        refused = ClientError(
            404,
            "push_not_configured",
            "Web Push is not set up: BEACON_DELIVERY_CHANNELS must send push through"
            " web_push, with its vapid_private_key in BEACON_CHANNEL_SETTINGS",
        )
        return JSONResponse(refused.as_json(), status_code=404)
    return JSONResponse({"public_key": key}, headers={"Cache-Control": CACHE_CONTROL})


@cache
def _vapid_public_key(private_key: str) -> str:
    return vapid_public_key(private_key)


def _push_key(settings: Settings) -> str | None:
    if settings.delivery_channels.get("push") != "web_push":
        return None
    private_key = settings.channel_settings.get("web_push", {}).get("vapid_private_key")
    return _vapid_public_key(private_key) if isinstance(private_key, str) else None


routes = [
    Route("/tracker.js", tracker_js, methods=["GET", "HEAD"]),
    Route("/tracker/push-key", push_key, methods=["GET"]),
]
