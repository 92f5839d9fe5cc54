"""Foundation: sources, profiles, sessions, events (monthly partitions on PostgreSQL), outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from beacon.core.db import JSONType, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _created_updated() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("write_key", sa.String(64), nullable=False, unique=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("consent_required", sa.Boolean(), nullable=False),
        sa.Column("allowed_origins", JSONType, nullable=False),
        *_created_updated(),
    )
    op.create_table(
        "profiles",
        sa.Column("id", sa.String(36), primary_key=True),
        *_created_updated(),
        sa.Column("last_seen_at", UtcDateTime(), nullable=True),
        sa.Column("traits", JSONType, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("profile_id", sa.String(36), nullable=True),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("context", JSONType, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_sessions_profile_id_created_at", "sessions", ["profile_id", "created_at"])

    events_columns: list[sa.schema.SchemaItem] = [
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("occurred_at", UtcDateTime(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("profile_id", sa.String(36), nullable=True),
        sa.Column("session_id", sa.String(128), nullable=True),
        sa.Column("external_id", sa.String(128), nullable=True),
        sa.Column("properties", JSONType, nullable=False),
        sa.Column("context", JSONType, nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("errors", JSONType, nullable=True),
        sa.Column("imported", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", "occurred_at", name="pk_events"),
    ]
    if op.get_bind().dialect.name == "postgresql":
        op.create_table("events", *events_columns, postgresql_partition_by="RANGE (occurred_at)")
    else:
        op.create_table("events", *events_columns)
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"])
    op.create_index("ix_events_profile_id_occurred_at", "events", ["profile_id", "occurred_at"])
    op.create_index("ix_events_type_occurred_at", "events", ["type", "occurred_at"])
    op.create_index("ix_events_session_id", "events", ["session_id"])

    op.create_table(
        "event_keys",
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "external_id", name="pk_event_keys"),
    )
    op.create_index("ix_event_keys_created_at", "event_keys", ["created_at"])
    op.create_table(
        "event_types",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("schema", JSONType, nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        *_created_updated(),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("envelopes", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_outbox_created_at", "outbox", ["created_at"])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("source_id", sa.String(64), nullable=True),
        sa.Column("endpoint", sa.String(200), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("errors", JSONType, nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_dead_letters_received_at", "dead_letters", ["received_at"])
    op.create_index(
        "ix_dead_letters_source_id_received_at", "dead_letters", ["source_id", "received_at"]
    )


def downgrade() -> None:
    for table in (
        "dead_letters",
        "outbox",
        "event_types",
        "event_keys",
        "events",
        "sessions",
        "profiles",
        "sources",
    ):
        op.drop_table(table)
