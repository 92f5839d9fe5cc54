"""Running Alembic from Beacon's settings (`beacon migrate`)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from beacon.settings import Settings


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", "beacon:migrations")
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    return config


def upgrade_database(settings: Settings) -> None:
    """Bring the database schema up to date; safe to run on every start."""
    if settings.is_sqlite:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    # "heads": domains built side by side may each add a branch of revisions; all are applied.
    command.upgrade(alembic_config(settings), "heads")
