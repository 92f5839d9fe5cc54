"""Admin API of messaging: `/api/templates` (with previews), `/api/messages` (with the
transactional send), `/api/deliveries` (the delivery log), `/api/suppressions`,
`/api/channels`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status

from beacon.core import jsonio
from beacon.deliveries import library, queries, service, suppression
from beacon.deliveries.models import MessageInstance, MessageTemplate
from beacon.deliveries.outlets import CAPTURE, Outlets
from beacon.deliveries.schemas import (
    ChannelsOut,
    DeliveryDetail,
    DeliveryOut,
    DeliveryPage,
    MessageIn,
    MessageOut,
    PreviewIn,
    PreviewOut,
    SendIn,
    SendOut,
    SuppressionIn,
    SuppressionOut,
    TemplateIn,
    TemplateOut,
    TemplateUpdate,
    TimelineOut,
)
from beacon.deliveries.templates import (
    CHANNEL_KINDS,
    ChannelKind,
    EventView,
    InvalidTemplate,
    ProfileView,
    RenderError,
)
from beacon.deps import AdminAuth, SessionDep, UtcTime, WriterDep
from beacon.identity import service as identity_service
from beacon.platform import Platform

router = APIRouter(prefix="/api", dependencies=[AdminAuth], tags=["messaging"])
TemplateNamePath = Annotated[str, Path(pattern=library.TEMPLATE_NAME_PATTERN)]
MessageIdPath = Annotated[int, Path(ge=1, le=jsonio.MAX_INT)]


def get_outlets(request: Request) -> Outlets:
    """The deployment's channels, links and HTTP policy (read from the settings once)."""
    outlets: Outlets | None = getattr(request.app.state, "deliveries_outlets", None)
    if outlets is None:
        outlets = Outlets.from_settings(request.app.state.settings)
        request.app.state.deliveries_outlets = outlets
    return outlets


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


OutletsDep = Annotated[Outlets, Depends(get_outlets)]
# Declared here, not in `deps.py`: deps sits below the platform in the layers.
PlatformDep = Annotated[Platform, Depends(get_platform)]


def template_problems(error: InvalidTemplate) -> HTTPException:
    """422 naming each problem: its part (`content.email.html`), line, type and message."""
    detail = [
        {
            "loc": ["body", "content", *filter(None, problem.part.split("."))],
            "line": problem.line,
            "type": problem.type,
            "msg": problem.msg,
        }
        for problem in error.problems
    ]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


@router.get("/templates", response_model=list[TemplateOut])
async def list_templates(session: SessionDep) -> Any:
    return await queries.list_templates(session=session)


@router.post("/templates", response_model=TemplateOut, status_code=status.HTTP_201_CREATED)
async def create_template(data: TemplateIn, session: SessionDep, writer: WriterDep) -> Any:
    """Save a new template; it is refused (422) naming the part and line of every problem."""
    if await queries.get_template(session=session, name=data.name) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"template {data.name!r} exists")
    return await _save(data.name, data.content, data.description, session, writer)


@router.get("/templates/{name}", response_model=TemplateOut)
async def get_template(name: str, session: SessionDep) -> Any:
    return await _template(session, name)


@router.put("/templates/{name}", response_model=TemplateOut)
async def put_template(
    name: TemplateNamePath, data: TemplateUpdate, session: SessionDep, writer: WriterDep
) -> Any:
    """Create or replace a template (its version goes up); sends already made keep theirs."""
    return await _save(name, data.content, data.description, session, writer)


@router.delete("/templates/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_template(name: str, writer: WriterDep) -> None:
    if not await writer.run(lambda tx: library.delete_template(tx, name=name)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"there is no template {name!r}")


@router.post("/templates/{name}/preview", response_model=PreviewOut)
async def preview_template(
    name: str, data: PreviewIn, session: SessionDep, outlets: OutletsDep
) -> PreviewOut:
    """Render a template for a real profile, a sample one, or Beacon's sample profile."""
    row = await _template(session, name)
    template = library.compiled(row.content)
    kind: ChannelKind = next(k for k in CHANNEL_KINDS if k in template.sources)
    if data.channel is not None:
        kind = data.channel
    if kind not in template.sources:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"template {name!r} has no {kind} parts"
        )
    profile = await _preview_profile(session, data)
    event = None
    if data.event is not None:
        event = EventView(
            type=data.event.type,
            id=data.event.id,
            time=data.event.time,
            properties=data.event.properties,
        )
    try:
        rendered = service.preview(
            template,
            kind=kind,
            profile=profile,
            event=event,
            context=data.context,
            signer=outlets.signer,
        )
    except RenderError as error:
        problem = {"loc": ["template", *error.part.split(".")], "line": error.line}
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{**problem, "type": "render", "msg": str(error)}],
        ) from None
    return PreviewOut(
        channel=kind,
        profile_id=profile.id,
        parts=dict(rendered.parts),
        one_click_unsubscribe_url=rendered.one_click_unsubscribe_url,
    )


@router.get("/messages", response_model=list[MessageOut])
async def list_messages(session: SessionDep) -> Any:
    return await queries.list_messages(session=session)


@router.post("/messages", response_model=MessageOut, status_code=status.HTTP_201_CREATED)
async def create_message(data: MessageIn, session: SessionDep, writer: WriterDep) -> Any:
    """Make a message (`messageId`): a template sent on one channel, with a tag."""
    try:
        message_id = await writer.run(
            lambda tx: library.create_message(
                tx,
                template=data.template,
                channel=data.channel,
                name=data.name,
                tag=data.tag,
                transactional=data.transactional,
            )
        )
    except library.LibraryError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    return await queries.get_message(session=session, message_id=message_id)


@router.get("/messages/{message_id}", response_model=MessageOut)
async def get_message(message_id: MessageIdPath, session: SessionDep) -> Any:
    found = await queries.get_message(session=session, message_id=message_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"there is no message {message_id}")
    return found


@router.post("/messages/{message_id}/send", response_model=SendOut, status_code=202)
async def send_message(message_id: MessageIdPath, data: SendIn, writer: WriterDep) -> SendOut:
    """Send the message to one person now (a transactional send: order confirmation,
    shipping status); `params` are the template's `context`. The same `idempotency_key`
    sends once."""
    [(kind, value)] = data.to.items()
    event = None if data.event is None else data.event.model_dump(mode="json")
    try:
        sent = await writer.run(
            lambda tx: service.send_message(
                tx,
                message_id=message_id,
                to=(kind, value),
                params=data.params,
                event=event,
                idempotency_key=data.idempotency_key,
            )
        )
    except service.NotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    return SendOut(
        delivery_id=sent.delivery_id,
        message_id=message_id,
        profile_id=sent.profile_id,
        duplicate=sent.duplicate,
    )


@router.get("/deliveries", response_model=DeliveryPage)
async def list_deliveries(
    session: SessionDep,
    profile_id: str | None = None,
    message_id: Annotated[int | None, Query(ge=1, le=jsonio.MAX_INT)] = None,
    status_: Annotated[str | None, Query(alias="status")] = None,
    channel: str | None = None,
    since: UtcTime = None,
    until: UtcTime = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> DeliveryPage:
    """The delivery log, newest first: each message instance with its status; what the
    capture channel kept is shown whole."""
    where = queries.DeliveryFilter(profile_id, message_id, status_, channel, since, until)
    try:
        rows, next_cursor = await queries.list_deliveries(
            session=session, where=where, limit=limit, cursor=cursor
        )
    except queries.InvalidCursor as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    items = [
        DeliveryOut(**_delivery(row, tag, content=row.channel == CAPTURE)) for row, tag in rows
    ]
    return DeliveryPage(items=items, next_cursor=next_cursor)


@router.get("/deliveries/{delivery_id}", response_model=DeliveryDetail)
async def get_delivery(delivery_id: str, session: SessionDep) -> DeliveryDetail:
    """One delivery with what was sent and its timeline."""
    found = await queries.get_delivery(session=session, delivery_id=delivery_id)
    if found is None:
        requested = await queries.get_request(session=session, delivery_id=delivery_id)
        if requested is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"there is no delivery {delivery_id!r}")
        return DeliveryDetail(**requested, timeline=[])
    row, tag, timeline = found
    return DeliveryDetail(
        **_delivery(row, tag, content=True),
        timeline=[TimelineOut.model_validate(step) for step in timeline],
    )


@router.get("/suppressions", response_model=list[SuppressionOut])
async def list_suppressions(
    session: SessionDep,
    kind: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Addresses nothing is sent to, in address order (`after`: the last one of a page)."""
    return await queries.list_suppressions(session=session, kind=kind, limit=limit, after=after)


@router.post("/suppressions", status_code=status.HTTP_204_NO_CONTENT)
async def add_suppression(data: SuppressionIn, writer: WriterDep) -> None:
    await writer.run(
        lambda tx: suppression.suppress(
            tx, kind=data.kind, address=data.address, reason=data.reason, detail=data.detail
        )
    )


@router.delete("/suppressions/{kind}/{address}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_suppression(kind: str, address: str, writer: WriterDep) -> None:
    if not await writer.run(lambda tx: suppression.unsuppress(tx, kind=kind, address=address)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{address!r} is not suppressed")


@router.get("/channels", response_model=ChannelsOut)
async def list_channels(outlets: OutletsDep) -> ChannelsOut:
    """Which channel sends each kind of message, and each channel's settings."""
    kinds = {kind: outlets.channel_for(kind, kind) for kind in CHANNEL_KINDS}
    return ChannelsOut(kinds=kinds, channels=[s.as_json() for s in outlets.registry.specs()])


async def _save(
    name: str, content: dict[str, Any], description: str | None, session: Any, writer: Any
) -> MessageTemplate:
    try:
        await writer.run(
            lambda tx: library.save_template(
                tx, name=name, content=content, description=description
            )
        )
    except InvalidTemplate as error:
        raise template_problems(error) from None
    session.expire_all()
    return await _template(session, name)


async def _template(session: Any, name: str) -> MessageTemplate:
    found = await queries.get_template(session=session, name=name)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"there is no template {name!r}")
    return found


async def _preview_profile(session: Any, data: PreviewIn) -> ProfileView:
    if data.profile_id is None and data.to is None:
        if data.sample is None:
            return service.SAMPLE_PROFILE
        sample = data.sample
        return ProfileView(
            id="sample-profile",
            traits=sample.traits,
            attributes=sample.attributes,
            identities=sample.identities,
        )
    if data.profile_id is not None:
        profile = await identity_service.get_profile(session=session, profile_id=data.profile_id)
    else:
        assert data.to is not None
        [(kind, value)] = data.to.items()
        profile = await identity_service.find_profile(session=session, kind=kind, value=value)
    if profile is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "there is no such profile")
    identities: dict[str, str] = {}
    for identity in await identity_service.list_identities(session=session, profile_id=profile.id):
        identities.setdefault(identity.kind, identity.value)
    return ProfileView(id=profile.id, traits=profile.traits, identities=identities)


def _delivery(row: MessageInstance, tag: str | None, *, content: bool) -> dict[str, Any]:
    return {
        "id": row.delivery_id,
        "message_instance_id": row.id,
        "message_id": row.message_id,
        "message_tag": tag,
        "profile_id": row.profile_id,
        "contact_id": row.contact_id,
        "kind": row.kind,
        "channel": row.channel,
        "recipient": row.recipient,
        "status": row.status,
        "status_reason": row.status_reason,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at,
        "read_at": row.read_at,
        "unsubscribed_at": row.unsubscribed_at,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "content": row.content if content else None,
    }
