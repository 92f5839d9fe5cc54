"""Shared fixtures: Beacon settings for each storage backend, and an app with its runtime.

`backend` runs a test on SQLite and, when BEACON_TEST_POSTGRES_URL is set, on a fresh
PostgreSQL database created for the test session (never a mock).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from beacon.app import create_app
from beacon.migrations.runner import upgrade_database
from beacon.settings import Settings

ADMIN_TOKEN = "test-admin-token"
POSTGRES_URL = os.environ.get("BEACON_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("BEACON_TEST_REDIS_URL")
NO_POSTGRES = "BEACON_TEST_POSTGRES_URL is not set: PostgreSQL tests need a real PostgreSQL"
NO_REDIS = "BEACON_TEST_REDIS_URL is not set: Redis tests need a real Redis"

TABLES = (
    "events",
    "event_keys",
    "event_types",
    "sessions",
    "profiles",
    "sources",
    "outbox",
    "dead_letters",
    "identities",
    "erasures",
    "timers",
    "manual_clock",
    "processed_messages",
    "consumer_dead_letters",
    "worker_heartbeats",
    "computed_attributes",
    "segments",
    "segment_versions",
    "attribute_states",
    "segment_members",
    "segment_history",
    "segment_passed_events",
    "delivery_requests",
    "journeys",
    "journey_versions",
    "journey_runs",
    "journey_run_path",
    "journey_conversions",
    "journey_sends",
    "message_templates",
    "messages",
    "message_instances",
    "message_timeline",
    "profile_contacts",
    "suppressions",
    "webhook_endpoints",
    "webhook_items",
    "webhook_messages",
    "webhook_attempts",
)


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _postgres_admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def new_postgres_database(prefix: str) -> Iterator[str]:
    """Create an empty PostgreSQL database named `prefix_…` and drop it afterwards; skip the
    test when BEACON_TEST_POSTGRES_URL is not set. Not for use while an event loop runs."""
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_postgres_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(POSTGRES_URL, name)
    finally:
        asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def scratch_database(
    backend: str, workdir: Path, prefix: str
) -> contextlib.AbstractContextManager[str]:
    """A new database of `backend` for a test's own Beacon process: an SQLite file in `workdir`,
    or a PostgreSQL database named `prefix_…`, dropped afterwards (skipped without PostgreSQL)."""
    if backend == "sqlite":
        return contextlib.nullcontext(f"sqlite:///{workdir / 'beacon.db'}")
    return new_postgres_database(prefix)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """Create a migrated PostgreSQL database for this test session and drop it afterwards."""
    with new_postgres_database("beacon_test") as url:
        upgrade_database(Settings(database_url=url))
        yield url


async def truncate_postgres(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
    finally:
        await conn.close()


async def delete_redis_keys(prefix: str) -> None:
    """Delete the Redis keys a test's processes made under `prefix`."""
    client = Redis.from_url(REDIS_URL or "")
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "cache_ttl_seconds": 0.0,
        "log_format": "console",
    }
    values.update(overrides)
    return Settings(**values)


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""Each storage backend, as fixture params (PostgreSQL only with BEACON_TEST_POSTGRES_URL)."""


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A migrated, empty database of the test's backend."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'beacon.db'}"
        upgrade_database(Settings(database_url=url))
        return url
    url = str(request.getfixturevalue("postgres_database"))
    asyncio.run(truncate_postgres(url))
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The Beacon app with its runtime started (lifespan entered)."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://beacon.test") as http:
        yield http


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def source_id(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> str:
    """An enabled source named `web`."""
    response = await client.post(
        "/api/sources", json={"id": "web", "name": "Website"}, headers=admin_headers
    )
    assert response.status_code == 201, response.text
    return "web"
