"""Build the database named by the settings."""

from __future__ import annotations

from beacon.core.clock import Clock
from beacon.settings import Settings
from beacon.storage.database import Database
from beacon.storage.postgres import PostgresDatabase
from beacon.storage.sqlite import SqliteDatabase


def create_database(settings: Settings, clock: Clock) -> Database:
    """Return the embedded SQLite database or PostgreSQL, as `database_url` says."""
    if settings.is_sqlite:
        return SqliteDatabase(
            settings.sqlite_path, clock=clock, synchronous=settings.sqlite_synchronous
        )
    return PostgresDatabase(
        settings.database_url, clock=clock, pool_size=settings.database_pool_size
    )
