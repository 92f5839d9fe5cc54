"""Fixtures for the ingest edge and admin API suites: a client that reports 500s as responses,
apps with settings of the test's own, and a small driver (`beacon`) speaking the public API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from sqlalchemy import func, select

from beacon.app import create_app
from beacon.identity.models import Identity, Profile
from beacon.identity.models import Session as SessionRow
from tests.conftest import ADMIN_TOKEN, make_settings

BASE_URL = "http://beacon.test"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@asynccontextmanager
async def http_client(
    app: FastAPI, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield http


@pytest.fixture
def plain_error_logs() -> Iterator[None]:
    """Log errors as plain JSON lines for this test (the default rich tracebacks take seconds)."""
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


@pytest.fixture
async def lenient_client(app: FastAPI, plain_error_logs: None) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the test's app that turns an unhandled error into the 500 a user would get."""
    async with http_client(app, raise_app_exceptions=False) as http:
        yield http


@dataclass
class Served:
    app: FastAPI
    client: httpx.AsyncClient


ServeApp = Callable[..., AbstractAsyncContextManager[Served]]


@pytest.fixture
def serve(database_url: str, plain_error_logs: None) -> ServeApp:
    """Start an app on the test's database with settings overridden, e.g. `serve(max_...=1)`."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Served]:
        application = create_app(make_settings(database_url, **overrides))
        async with application.router.lifespan_context(application):
            async with http_client(application, raise_app_exceptions=False) as http:
                yield Served(application, http)

    return start


@pytest.fixture
async def write_key(client: httpx.AsyncClient, source_id: str) -> str:
    """The write key of the test's source (`source_id`), as `GET /api/sources/{id}` shows it."""
    response = await client.get(f"/api/sources/{source_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    key = response.json()["write_key"]
    assert isinstance(key, str)
    return key


async def create_source(client: httpx.AsyncClient, source_id: str, **fields: Any) -> None:
    body = {"id": source_id, "name": source_id, **fields}
    response = await client.post("/api/sources", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text


def track_body(
    source_id: str,
    events: list[Any],
    *,
    session_id: str = "session-1",
    profile_id: str | None = None,
    context: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": {"id": source_id},
        "session": {"id": session_id},
        "events": events,
    }
    if profile_id is not None:
        body["profile"] = {"id": profile_id}
    if context is not None:
        body["context"] = context
    if options is not None:
        body["options"] = options
    return body


async def all_events(client: httpx.AsyncClient, **filters: Any) -> list[dict[str, Any]]:
    """Every event of the history matching `filters`, following the cursor to the last page."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
    params.setdefault("limit", 1000)
    while True:
        response = await client.get("/api/events", params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        if page["next_cursor"] is None:
            return items
        params["cursor"] = page["next_cursor"]


async def profile_by(client: httpx.AsyncClient, kind: str, value: str) -> dict[str, Any]:
    """The profile an identity names, as the admin API shows it."""
    response = await client.get(f"/api/profiles/by/{kind}/{value}", headers=ADMIN)
    assert response.status_code == 200, response.text
    profile: dict[str, Any] = response.json()
    return profile


async def dead_letters(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """The refused payloads kept, newest first."""
    response = await client.get("/api/dead-letters", headers=ADMIN)
    assert response.status_code == 200, response.text
    letters: list[dict[str, Any]] = response.json()
    return letters


async def profile_row(app: FastAPI, profile_id: str) -> Profile:
    """The stored profile row, as the database holds it."""
    async with app.state.sessions() as session:
        profile: Profile | None = await session.get(Profile, profile_id)
    assert profile is not None
    return profile


async def identities_of(app: FastAPI, profile_id: str) -> set[tuple[str, str]]:
    """The (kind, value) identities stored for a profile."""
    async with app.state.sessions() as session:
        rows = await session.scalars(select(Identity).where(Identity.profile_id == profile_id))
        return {(i.kind, i.value) for i in rows}


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll `check` until it holds; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Beacon:
    """The running app as a user reaches it: `/track`, the admin API, and the stored rows."""

    app: FastAPI
    client: httpx.AsyncClient
    source_id: str

    async def track(
        self,
        events: list[dict[str, Any]],
        *,
        params: dict[str, str] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Post to `/track` from the test's source; return the body of the 200 it must answer."""
        fields.setdefault("options", {"debugger": True})
        body = track_body(fields.pop("source_id", self.source_id), events, **fields)
        response = await self.client.post("/track", json=body, params=params)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def events(self, **filters: Any) -> list[dict[str, Any]]:
        return await all_events(self.client, **filters)

    async def session_row(self, session_id: str) -> SessionRow | None:
        async with self.app.state.sessions() as session:
            row: SessionRow | None = await session.get(SessionRow, session_id)
            return row

    async def profile_row(self, profile_id: str) -> Profile | None:
        async with self.app.state.sessions() as session:
            row: Profile | None = await session.get(Profile, profile_id)
            return row

    async def profile_count(self) -> int:
        async with self.app.state.sessions() as session:
            count = await session.scalar(select(func.count()).select_from(Profile))
            return int(count or 0)

    async def dead_letters(self) -> list[dict[str, Any]]:
        return await dead_letters(self.client)


@pytest.fixture
def beacon(app: FastAPI, client: httpx.AsyncClient, source_id: str) -> Beacon:
    return Beacon(app=app, client=client, source_id=source_id)
