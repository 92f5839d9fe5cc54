"""The ingest endpoints: `/track` and `/collect/{event_type}/{source_id}`.

Each handler returns (status, JSON body); `asgi.py` routes to them and sends the answer.
"""

from __future__ import annotations

from typing import Any

from beacon.core.errors import ClientError
from beacon.identity.service import get_profile, profile_json
from beacon.ingest.http import HttpRequest, decode_json, read_body
from beacon.ingest.pipeline import Answer, IngestEdge, reject, storage_failure
from beacon.ingest.server_api import authenticate_key, server_events
from beacon.ingest.tracardi import claimed_source_id, collect, track
from beacon.storage.commit import CommitFailed, CommitterStopped


def unavailable(exc: CommitFailed | CommitterStopped) -> Answer:
    """503: the client should retry (`storage_failure` says whether anything was stored)."""
    code, message = storage_failure(exc)
    return 503, {"error": {"code": code, "message": message}}


async def track_endpoint(edge: IngestEdge, request: HttpRequest) -> Answer:
    body = b""
    raw: Any = None
    try:
        body = await read_body(request, limit=edge.settings.max_request_bytes)
        raw = decode_json(body)
        result = await track(edge, body, raw, profile_less=request.flag("profile_less"))
    except ClientError as error:
        source_id = claimed_source_id(raw) if error.status != 401 else None
        events = raw.get("events") if isinstance(raw, dict) else None
        count = len(events) if isinstance(events, list) else 1
        await reject(
            edge, error, endpoint="/track", source_id=source_id, payload=body, events=count
        )
        return error.status, error.as_json()
    except (CommitterStopped, CommitFailed) as exc:
        return unavailable(exc)
    if _wants_profile(raw) and result["profile"] is not None:
        async with edge.sessions() as session:
            profile = await get_profile(session=session, profile_id=result["profile"]["id"])
        if profile is not None:
            result["profile"] = profile_json(profile)
    return 200, result


async def collect_endpoint(
    edge: IngestEdge, request: HttpRequest, *, event_type: str, source_id: str
) -> Answer:
    body = b""
    try:
        body = await read_body(request, limit=edge.settings.max_request_bytes)
        raw = decode_json(body)
        result = await collect(edge, body, raw, event_type=event_type, source_id=source_id)
    except ClientError as error:
        attributable = source_id if error.status != 401 else None
        await reject(edge, error, endpoint="/collect", source_id=attributable, payload=body)
        return error.status, error.as_json()
    except (CommitterStopped, CommitFailed) as exc:
        return unavailable(exc)
    return 200, result


async def server_events_endpoint(edge: IngestEdge, request: HttpRequest) -> Answer:
    body = b""
    source_id: str | None = None
    try:
        source = await authenticate_key(edge, request)
        source_id = source.id
        body = await read_body(request, limit=edge.settings.max_request_bytes)
        result = await server_events(edge, source, body, decode_json(body))
    except ClientError as error:
        await reject(edge, error, endpoint="/api/v1/events", source_id=source_id, payload=body)
        return error.status, error.as_json()
    except (CommitterStopped, CommitFailed) as exc:
        return unavailable(exc)
    return 200, result


def _wants_profile(raw: Any) -> bool:
    options = raw.get("options") if isinstance(raw, dict) else None
    return isinstance(options, dict) and options.get("profile") is True
