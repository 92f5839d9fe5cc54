"""`GET /`: what this server is and where to read on, until Beacon has a console.

Browsers (which accept `text/html`) get a small page; other clients the same as JSON.
"""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from beacon import __version__

DOCS = "/docs"
OPENAPI = "/openapi.json"
# Where each way in is described in README.md, by section title.
README_SECTIONS = (
    "Start",
    "Sending events",
    "Segment-compatible ingestion",
    "Amplitude-compatible ingestion",
    "Web tracker",
    "Python SDK",
    "Admin API",
)
ENDPOINTS = {
    "tracardi": "POST /track",
    "segment": "POST /v1/batch",
    "amplitude": "POST /2/httpapi",
    "server_api": "POST /api/v1/events",
    "tracker": "GET /tracker.js",
}


def describe() -> dict[str, Any]:
    """Return what the home answer says, as JSON."""
    return {
        "name": "Beacon",
        "version": __version__,
        "message": f"Beacon is running. It has no console yet: the API is described at {DOCS}.",
        "docs": DOCS,
        "openapi": OPENAPI,
        "endpoints": ENDPOINTS,
        "readme": {"file": "README.md", "sections": list(README_SECTIONS)},
        "health": {"live": "/healthz", "ready": "/readyz", "metrics": "/metrics"},
    }


def page(about: dict[str, Any]) -> str:
    """Return `about` as a small HTML page."""
    endpoints = "".join(
        f"<li><code>{escape(route)}</code> ({escape(name)})</li>"
        for name, route in about["endpoints"].items()
    )
    sections = ", ".join(f"“{escape(s)}”" for s in about["readme"]["sections"])
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Beacon</title>"
        "<body style='font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto'>"
        f"<h1>Beacon {escape(about['version'])}</h1>"
        "<p>Beacon is running. It has no console yet: the API (the admin API needs the"
        f" <code>BEACON_ADMIN_TOKEN</code> bearer token) is at <a href='{DOCS}'>{DOCS}</a>"
        f" (OpenAPI: <a href='{OPENAPI}'>{OPENAPI}</a>).</p>"
        f"<p>Events come in at</p><ul>{endpoints}</ul>"
        f"<p>README.md explains each: see {sections}.</p>"
        "<p>Health: <a href='/healthz'>/healthz</a>, <a href='/readyz'>/readyz</a>,"
        " <a href='/metrics'>/metrics</a>.</p></body></html>"
    )


async def home(request: Request) -> Response:
    about = describe()
    headers = {"Vary": "Accept"}
    if "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(page(about), headers=headers)
    return JSONResponse(about, headers=headers)


routes = [Route("/", home, methods=["GET"])]
