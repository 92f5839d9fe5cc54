"""Which browser origins may post a source's events to `/track` and `/collect`.

A source whose `allowed_origins` is empty takes events from any origin. Otherwise a request
carrying an `Origin` header not in the list is refused with 403 before anything is stored.
`/collect` names its source in the path. `/track` names it in the body, so when some source
restricts origins and the request has an `Origin`, the body is read here first and handed on to
the endpoint unchanged (requests without `Origin`, server-to-server, never pay for that).
"""

from __future__ import annotations

import dataclasses

from starlette.types import Message

from beacon.core import jsonio
from beacon.core.errors import ClientError, Problem
from beacon.ingest.http import HttpRequest, gunzip
from beacon.ingest.pipeline import IngestEdge
from beacon.ingest.tracardi import claimed_source_id
from beacon.sources.service import SourceInfo

GZIP = ("gzip", "x-gzip")


def normalize_origin(origin: str) -> str:
    """Return `origin` as browsers send it: lower case, no trailing slash."""
    return origin.strip().rstrip("/").lower()


class OriginGate:
    """Refuses browser requests from origins their source does not allow."""

    def __init__(self, edge: IngestEdge) -> None:
        self._edge = edge
        # The catalog mapping the rules were built from, and the rules: source id -> origins.
        self._rules: tuple[dict[str, SourceInfo] | None, dict[str, frozenset[str]]] = (None, {})

    async def _restricted(self) -> dict[str, frozenset[str]]:
        current = await self._edge.sources.current()
        if self._rules[0] is not current:
            rules = {
                s.id: frozenset(normalize_origin(o) for o in s.allowed_origins)
                for s in current.values()
                if s.allowed_origins
            }
            self._rules = (current, rules)
        return self._rules[1]

    async def check_collect(self, source_id: str, origin: str) -> ClientError | None:
        """Return the refusal of a `/collect` request from `origin`, if it is refused."""
        return self._refusal(await self._restricted(), source_id, origin, "/collect")

    async def check_track(
        self, request: HttpRequest, origin: str
    ) -> tuple[ClientError | None, HttpRequest]:
        """Return the refusal of a `/track` request from `origin`, if any, and the request to
        hand on (its body is replayed when it had to be read here)."""
        rules = await self._restricted()
        if not rules:
            return None, request
        limit = self._edge.settings.max_request_bytes
        body, request = await _buffer_body(request, limit=limit)
        source_id = _claimed_source(body, request.headers.get("content-encoding", ""), limit)
        return self._refusal(rules, source_id, origin, "/track"), request

    def _refusal(
        self, rules: dict[str, frozenset[str]], source_id: str | None, origin: str, endpoint: str
    ) -> ClientError | None:
        allowed = rules.get(source_id) if source_id is not None else None
        if allowed is None or normalize_origin(origin) in allowed:
            return None
        self._edge.metrics.events_rejected.labels(endpoint, "origin_not_allowed").inc()
        return ClientError(
            403,
            "origin_not_allowed",
            f"origin {origin!r} may not send events to source {source_id!r}",
            [
                Problem(
                    loc=("headers", "origin"),
                    msg=f"{origin} is not one of the source's allowed origins",
                    type="origin_not_allowed",
                )
            ],
        )


async def _buffer_body(request: HttpRequest, *, limit: int) -> tuple[bytes | None, HttpRequest]:
    """Read the raw body and return it (None past `limit` or if cut short) with a request that
    replays every message read, so the endpoint reads, bounds and reports it as usual."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None, request  # the endpoint answers 413 without reading it
    messages: list[Message] = []
    size = 0
    complete = False
    while size <= limit and not complete:
        message = await request.receive()
        messages.append(message)
        if message["type"] != "http.request":
            break  # the client went away: the endpoint sees it too
        size += len(message.get("body", b""))
        complete = not message.get("more_body", False)
    replayed = iter(messages)
    original = request.receive

    async def receive() -> Message:
        message = next(replayed, None)
        return message if message is not None else await original()

    replay = dataclasses.replace(request, receive=receive)
    if not complete or size > limit:
        return None, replay
    return b"".join(m.get("body", b"") for m in messages), replay


def _claimed_source(body: bytes | None, encoding: str, limit: int) -> str | None:
    """Return the source a `/track` body names; None when it cannot be read (the endpoint
    then refuses it with its own 4xx)."""
    if body is None:
        return None
    try:
        if encoding.strip().lower() in GZIP:
            body = gunzip(body, limit=limit)
        return claimed_source_id(jsonio.loads(body))
    except (ClientError, jsonio.JSONDecodeError):
        return None
