"""The public endpoints messages link to (no admin token: the links are signed), and the
inbound bounce endpoint (a source's write key).

- `GET /m/open/{token}`: the open pixel; the first opening records `message.read`. It always
  answers the pixel (a broken image helps no one), recording only for a valid token.
- `GET /m/click/{token}`: records `message.clicked` and redirects (302) to the link the token
  signed: nowhere else, so it is no open redirect.
- `GET /m/view/{token}`: the message as it was sent.
- `GET /m/unsubscribe/{token}`: a page asking to confirm (mail scanners follow links: a GET
  never unsubscribes); `POST` there unsubscribes.
- `POST /m/unsubscribe-one-click/{token}`: RFC 8058 one-click unsubscribe, the body being
  `List-Unsubscribe=One-Click`.
- `POST /m/sms-status/{token}`: Twilio's status callback for one SMS (`MessageStatus`,
  `ErrorCode`): a lost SMS records `message.undelivered`.
- `POST /api/v1/bounces`: bounces and complaints (JSON, one or a list), with a write key.
"""

from __future__ import annotations

import base64
import html
import secrets
from typing import Annotated, Any
from urllib.parse import parse_qs

import structlog
from fastapi import APIRouter, Body, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from beacon.core.clock import Clock
from beacon.deliveries import feedback
from beacon.deliveries.feedback import Report
from beacon.deliveries.links import InvalidLink, Purpose, SignedLink
from beacon.deliveries.outlets import Outlets
from beacon.deliveries.routes import OutletsDep
from beacon.deliveries.schemas import BounceIn
from beacon.deps import ClockDep, WriterDep
from beacon.identity.actions import db_json
from beacon.storage.writer import Writer

log = structlog.get_logger()
router = APIRouter(tags=["message tracking"])

# A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}
PAGE_HEADERS = {**NO_STORE, "Content-Security-Policy": "script-src 'none'; frame-ancestors 'none'"}
ONE_CLICK = b"List-Unsubscribe=One-Click"
MAX_REPORTS = 1000
MAX_STATUS_BYTES = 16 * 1024


def _verified(outlets: Outlets, token: str, purpose: Purpose, clock: Clock) -> SignedLink:
    try:
        return outlets.signer.verify(token, purpose=purpose, now=clock.now())
    except InvalidLink as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"this link is not valid: {error}") from None


@router.get("/m/open/{token}", include_in_schema=False)
async def open_pixel(
    token: str, clock: ClockDep, writer: WriterDep, outlets: OutletsDep
) -> Response:
    try:
        link = outlets.signer.verify(token, purpose="open", now=clock.now())
    except InvalidLink:
        return Response(PIXEL, media_type="image/gif", headers=NO_STORE)
    try:
        await writer.run(
            lambda tx: feedback.record_open(tx, delivery_id=link.delivery_id, signer=outlets.signer)
        )
    except Exception:  # the image still loads; the open is lost, and said so
        log.warning("open_not_recorded", delivery=link.delivery_id, exc_info=True)
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get("/m/click/{token}", include_in_schema=False)
async def click(token: str, clock: ClockDep, writer: WriterDep, outlets: OutletsDep) -> Response:
    link = _verified(outlets, token, "click", clock)
    assert link.target is not None
    try:
        await writer.run(
            lambda tx: feedback.record_click(
                tx, delivery_id=link.delivery_id, link=str(link.target), signer=outlets.signer
            )
        )
    except Exception:  # the reader still gets where the link goes
        log.warning("click_not_recorded", delivery=link.delivery_id, exc_info=True)
    return RedirectResponse(link.target, status_code=status.HTTP_302_FOUND, headers=NO_STORE)


@router.get("/m/view/{token}", include_in_schema=False)
async def view_online(
    token: str, request: Request, clock: ClockDep, outlets: OutletsDep
) -> Response:
    link = _verified(outlets, token, "view", clock)
    database = request.app.state.platform.database
    rows = await database.read(
        "SELECT content FROM message_instances WHERE delivery_id = ?", link.delivery_id
    )
    content = db_json(rows[0][0]) if rows else None
    parts = content.get("parts", {}) if isinstance(content, dict) else {}
    if "html" in parts:
        return HTMLResponse(parts["html"], headers=PAGE_HEADERS)
    if "text" in parts:
        page = f"<!doctype html><meta charset=utf-8><pre>{html.escape(parts['text'])}</pre>"
        return HTMLResponse(page, headers=PAGE_HEADERS)
    raise HTTPException(status.HTTP_404_NOT_FOUND, "this message is not kept")


@router.get("/m/unsubscribe/{token}", include_in_schema=False)
async def unsubscribe_page(token: str, clock: ClockDep, outlets: OutletsDep) -> Response:
    _verified(outlets, token, "unsubscribe", clock)
    page = (
        "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>"
        "<meta name=viewport content='width=device-width'>"
        "<p>Stop receiving these messages?</p>"
        "<form method=post><button type=submit>Unsubscribe</button></form>"
    )
    return HTMLResponse(page, headers=PAGE_HEADERS)


@router.post("/m/unsubscribe/{token}", include_in_schema=False)
async def unsubscribe(
    token: str, clock: ClockDep, writer: WriterDep, outlets: OutletsDep
) -> Response:
    link = _verified(outlets, token, "unsubscribe", clock)
    await _unsubscribe(writer, outlets, link.delivery_id, "unsubscribe page")
    page = "<!doctype html><meta charset=utf-8><title>Unsubscribed</title><p>You are unsubscribed."
    return HTMLResponse(page, headers=PAGE_HEADERS)


@router.post("/m/unsubscribe-one-click/{token}", include_in_schema=False)
async def one_click_unsubscribe(
    token: str, request: Request, clock: ClockDep, writer: WriterDep, outlets: OutletsDep
) -> Response:
    link = _verified(outlets, token, "one_click_unsubscribe", clock)
    body = await request.body()
    if ONE_CLICK not in body:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            "a one-click unsubscribe posts List-Unsubscribe=One-Click (RFC 8058)",
        )
    await _unsubscribe(writer, outlets, link.delivery_id, "one-click (RFC 8058)")
    return PlainTextResponse("unsubscribed", headers=NO_STORE)


@router.post("/m/sms-status/{token}", include_in_schema=False)
async def sms_status(
    token: str, request: Request, clock: ClockDep, writer: WriterDep, outlets: OutletsDep
) -> Response:
    """Twilio's status callback for one SMS (a form with `MessageStatus`, `ErrorCode`): the
    signed link names the delivery, so no one else can report on it."""
    link = _verified(outlets, token, "sms_status", clock)
    body = await request.body()
    if len(body) > MAX_STATUS_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "a status report is a small form")
    form = {name: values[0] for name, values in parse_qs(body.decode("utf-8", "replace")).items()}
    reported = form.get("MessageStatus", form.get("SmsStatus", "")).strip().lower()
    if not reported:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "a status report is a form with MessageStatus (Twilio's status callback)",
        )
    error_code = form.get("ErrorCode", "").strip() or None
    result = await writer.run(
        lambda tx: feedback.record_sms_status(
            tx,
            delivery_id=link.delivery_id,
            status=reported,
            error_code=error_code,
            signer=outlets.signer,
        )
    )
    log.info("sms_status_reported", delivery=link.delivery_id, status=reported, result=result)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=NO_STORE)


async def _unsubscribe(writer: Writer, outlets: Outlets, delivery_id: str, how: str) -> None:
    found = await writer.run(
        lambda tx: feedback.record_unsubscribe(
            tx, delivery_id=delivery_id, signer=outlets.signer, how=how
        )
    )
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this message is not known")


async def write_key_source(request: Request) -> str:
    """The enabled source whose write key the request carries (Bearer, or Basic's user)."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    key = credentials.strip()
    if scheme.lower() == "basic":
        try:
            key = base64.b64decode(key, validate=True).decode().partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            key = ""
    elif scheme.lower() != "bearer":
        key = ""
    source = await request.app.state.sources.by_write_key(key) if key else None
    if source is None or not source.enabled or not secrets.compare_digest(source.write_key, key):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a write key is required (Authorization: Bearer <write key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return str(source.id)


@router.post("/api/v1/bounces", tags=["message tracking"])
async def report_bounces(
    reports: Annotated[BounceIn | list[BounceIn], Body()],
    source_id: Annotated[str, Depends(write_key_source)],
    writer: WriterDep,
    outlets: OutletsDep,
) -> dict[str, Any]:
    """Bounces and spam complaints from a mail provider: a permanent bounce or a complaint
    suppresses the address; one naming its message records `message.undelivered` (with the
    reason) or `message.spam` on the person."""
    items = reports if isinstance(reports, list) else [reports]
    if not 1 <= len(items) <= MAX_REPORTS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"send 1 to {MAX_REPORTS} reports at once"
        )
    parsed = [
        Report(
            type=item.type,
            email=item.email,
            delivery_id=item.delivery_id or _delivery_of(item.message_id),
            permanent=item.permanent,
            description=item.description,
        )
        for item in items
    ]

    async def apply(tx: Any) -> list[str]:
        return [await feedback.record_report(tx, report=r, signer=outlets.signer) for r in parsed]

    results = await writer.run(apply)
    log.info("bounces_reported", source=source_id, count=len(parsed))
    return {"results": results}


def _delivery_of(message_id: str | None) -> str | None:
    """The delivery id in a `Message-ID` Beacon made (`<delivery-id@domain>`)."""
    if message_id is None:
        return None
    local = message_id.strip().strip("<>").partition("@")[0]
    return local or None
