"""Admin API of webhook endpoints: `/api/webhooks` (create, read, change, enable and disable,
delete), their secrets' rotation, attempts log, messages, replay of a time range, a test send.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from beacon.deliveries.outbound import OutboundError, check_destination
from beacon.deliveries.routes import OutletsDep, PlatformDep
from beacon.deliveries.webhooks import batches, endpoints, service
from beacon.deliveries.webhooks.models import WebhookEndpointRow
from beacon.deliveries.webhooks.schemas import (
    AttemptOut,
    AttemptPage,
    EndpointCreated,
    EndpointIn,
    EndpointOut,
    EndpointUpdate,
    ReplayIn,
    ReplayOut,
    RotateIn,
    RotateOut,
    SecretOut,
    TestSendOut,
    WebhookMessageOut,
    WebhookMessagePage,
    check_format,
)
from beacon.deliveries.webhooks.sender import send_test
from beacon.deps import AdminAuth, SessionDep, WriterDep
from beacon.storage.transaction import Tx

router = APIRouter(prefix="/api/webhooks", dependencies=[AdminAuth], tags=["webhooks"])
PageLimit = Annotated[int, Query(ge=1, le=1000)]


@router.get("", response_model=list[EndpointOut])
async def list_endpoints(session: SessionDep) -> list[EndpointOut]:
    return [endpoint_out(row) for row in await service.list_endpoints(session=session)]


@router.post("", response_model=EndpointCreated, status_code=status.HTTP_201_CREATED)
async def create_endpoint(
    data: EndpointIn, session: SessionDep, writer: WriterDep, outlets: OutletsDep
) -> EndpointCreated:
    """Add an endpoint; its URL must resolve to an address Beacon may send to (422 names the
    problem). The answer holds its signing secret, shown this once."""
    assert data.url is not None
    await _check_url(data.url, outlets)
    options = {} if data.api_key is None else {"api_key": data.api_key}
    endpoint_id, secret = await writer.run(
        lambda tx: endpoints.create_endpoint(
            tx,
            url=str(data.url),
            format=data.format,
            statuses=data.statuses,
            event_types=data.event_types,
            options=options,
            description=data.description,
            enabled=data.enabled,
        )
    )
    row = await _endpoint(session, endpoint_id)
    return EndpointCreated(**endpoint_out(row).model_dump(), secret=secret)


@router.get("/{endpoint_id}", response_model=EndpointOut)
async def get_endpoint(endpoint_id: str, session: SessionDep) -> EndpointOut:
    return endpoint_out(await _endpoint(session, endpoint_id))


@router.patch("/{endpoint_id}", response_model=EndpointOut)
async def update_endpoint(
    endpoint_id: str,
    data: EndpointUpdate,
    session: SessionDep,
    writer: WriterDep,
    outlets: OutletsDep,
) -> EndpointOut:
    """Change an endpoint; `enabled: false` stops sending (what waits is kept), `true` sends
    what was held."""
    row = await _endpoint(session, endpoint_id)
    fields = data.model_dump(exclude_unset=True)
    statuses = fields.get("statuses", row.statuses)
    event_types = fields.get("event_types", row.event_types)
    api_key = fields.get("api_key", (row.options or {}).get("api_key"))
    try:
        check_format(row.format, statuses, event_types, api_key)
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    if "url" in fields:
        await _check_url(fields["url"], outlets)
    changes = {k: v for k, v in fields.items() if k in ("url", "statuses", "event_types")}
    if "description" in fields:
        changes["description"] = fields["description"]
    if "api_key" in fields:
        changes["options"] = {**(row.options or {}), "api_key": api_key}
    enabled = fields.get("enabled")

    async def apply(tx: Tx) -> None:
        if changes:
            await endpoints.update_endpoint(tx, endpoint_id=endpoint_id, changes=changes)
        if enabled is True:
            await endpoints.enable_endpoint(tx, endpoint_id=endpoint_id)
        elif enabled is False:
            found = await endpoints.load_endpoint(tx.sql.fetch, endpoint_id)
            if found is not None:
                await endpoints.disable_endpoint(tx, found, reason="disabled through the API")

    await writer.run(apply)
    session.expire_all()
    return endpoint_out(await _endpoint(session, endpoint_id))


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_endpoint(endpoint_id: str, writer: WriterDep) -> None:
    """Delete an endpoint with what waited for it and its log."""
    if not await writer.run(lambda tx: endpoints.delete_endpoint(tx, endpoint_id=endpoint_id)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"there is no endpoint {endpoint_id!r}")


@router.post("/{endpoint_id}/secrets/rotate", response_model=RotateOut)
async def rotate_secret(endpoint_id: str, data: RotateIn, writer: WriterDep) -> RotateOut:
    """Make a new signing secret; the current ones sign beside it for `overlap_seconds`, so
    receivers can switch without missing a message."""
    now = datetime.now(UTC)
    overlap = timedelta(seconds=data.overlap_seconds)
    secret = await writer.run(
        lambda tx: endpoints.rotate_secret(tx, endpoint_id=endpoint_id, overlap=overlap, now=now)
    )
    if secret is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"there is no endpoint {endpoint_id!r}")
    return RotateOut(secret=secret, previous_expire_at=now + overlap)


@router.get("/{endpoint_id}/attempts", response_model=AttemptPage)
async def list_attempts(
    endpoint_id: str, session: SessionDep, limit: PageLimit = 100, cursor: str | None = None
) -> AttemptPage:
    """Every post to the endpoint, newest first: status, latency, the start of the answer."""
    await _endpoint(session, endpoint_id)
    try:
        rows, next_cursor = await service.list_attempts(
            session=session, endpoint_id=endpoint_id, limit=limit, cursor=cursor
        )
    except service.InvalidCursor as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    return AttemptPage(items=[AttemptOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/{endpoint_id}/messages", response_model=WebhookMessagePage)
async def list_messages(
    endpoint_id: str,
    session: SessionDep,
    status_: Annotated[str | None, Query(alias="status")] = None,
    limit: PageLimit = 100,
    cursor: str | None = None,
) -> WebhookMessagePage:
    """The endpoint's webhook messages (batches), newest first."""
    await _endpoint(session, endpoint_id)
    rows, next_cursor = await service.list_messages(
        session=session, endpoint_id=endpoint_id, status=status_, limit=limit, cursor=cursor
    )
    return WebhookMessagePage(
        items=[WebhookMessageOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post("/{endpoint_id}/replay", response_model=ReplayOut)
async def replay(
    endpoint_id: str, data: ReplayIn, session: SessionDep, writer: WriterDep
) -> ReplayOut:
    """Send again the messages made in [since, until) that were not delivered (or all of
    them), each with its own `webhook-id`."""
    await _endpoint(session, endpoint_id)
    count = await writer.run(
        lambda tx: batches.replay(
            tx,
            endpoint_id=endpoint_id,
            since=data.since,
            until=data.until,
            delivered_too=data.delivered_too,
        )
    )
    return ReplayOut(replayed=count)


@router.post("/{endpoint_id}/test", response_model=TestSendOut)
async def test_send(endpoint_id: str, platform: PlatformDep, outlets: OutletsDep) -> TestSendOut:
    """Post one made-up element to the endpoint now, signed like any (enabled or not), and
    answer how it went; the attempt is logged with a `test_` webhook id."""
    endpoint = await endpoints.load_endpoint(platform.database.read, endpoint_id)
    if endpoint is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"there is no endpoint {endpoint_id!r}")
    webhook_id, answer = await send_test(platform, outlets, endpoint)
    response = answer.response
    return TestSendOut(
        webhook_id=webhook_id,
        outcome=answer.outcome,
        status_code=None if response is None else response.status,
        latency_ms=answer.latency_ms,
        response_excerpt=None if response is None else response.excerpt,
        error=answer.error,
    )


async def _check_url(url: str, outlets: Any) -> None:
    try:
        await check_destination(url, allow=outlets.policy.allow)
    except (OutboundError, ValueError) as error:
        problem = {"loc": ["body", "url"], "msg": str(error), "type": "url_refused"}
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [problem]) from None


async def _endpoint(session: Any, endpoint_id: str) -> WebhookEndpointRow:
    found = await service.get_endpoint(session=session, endpoint_id=endpoint_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"there is no endpoint {endpoint_id!r}")
    return found


def endpoint_out(row: WebhookEndpointRow) -> EndpointOut:
    """An endpoint as the API shows it: its secrets by their start only."""
    return EndpointOut(
        id=row.id,
        url=row.url,
        format=row.format,
        statuses=row.statuses,
        event_types=row.event_types,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        disabled_at=row.disabled_at,
        failing_since=row.failing_since,
        description=row.description,
        secrets=[
            SecretOut(
                starts=str(s["secret"])[:12] + "…",
                created_at=s.get("created_at"),
                expires_at=s.get("expires_at"),
            )
            for s in row.secrets
        ],
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
