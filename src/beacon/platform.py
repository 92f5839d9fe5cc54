"""`Platform`: the services under every domain, built once per process by the runtime.

Domains receive it in their `register(registry, platform)` and their routes (through `deps`):
the write path, reads beside it, the bus, the clock, the settings and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from beacon.bus.base import Bus
from beacon.core.clock import Clock
from beacon.core.metrics import Metrics
from beacon.settings import Settings
from beacon.storage.database import Database
from beacon.storage.writer import Writer


@dataclass(frozen=True, slots=True)
class Platform:
    settings: Settings
    clock: Clock
    engine: AsyncEngine  # reads outside the write path (SQLAlchemy)
    database: Database
    writer: Writer
    bus: Bus
    metrics: Metrics
    process_id: str  # this process's heartbeat id (`workers.heartbeats`), when it consumes
