"""Alembic migrations; `beacon migrate` runs them on SQLite and PostgreSQL alike."""
