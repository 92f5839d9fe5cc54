"""`GET /tracker.js`: the web tracker, with an ETag, caching headers and gzip when accepted."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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


routes = [Route("/tracker.js", tracker_js, methods=["GET", "HEAD"])]
