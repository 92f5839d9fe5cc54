"""The platform under every domain: timers, the manual clock, consumers' processed keys and
dead letters, and worker heartbeats.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from beacon.core.db import JSONType, UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "timers",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("run_at", UtcDateTime(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("claimed_until", UtcDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    # Claims read the oldest due first; `key` breaks ties so many timers sharing one time are
    # read in index order, not sorted on every claim.
    op.create_index("ix_timers_run_at", "timers", ["run_at", "key"])
    op.create_index(
        "ix_timers_failing",
        "timers",
        ["key"],
        sqlite_where=sa.text("attempts > 0"),
        postgresql_where=sa.text("attempts > 0"),
    )
    op.create_table(
        "manual_clock",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("now", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "processed_messages",
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("processed_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_processed_messages_processed_at", "processed_messages", ["processed_at"])
    op.create_table(
        "consumer_dead_letters",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("consumer", sa.String(100), nullable=False),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at", UtcDateTime(), nullable=False),
        sa.Column("replayed_at", UtcDateTime(), nullable=True),
    )
    op.create_index(
        "ix_consumer_dead_letters_consumer_failed_at",
        "consumer_dead_letters",
        ["consumer", "failed_at"],
    )
    op.create_table(
        "worker_heartbeats",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("names", JSONType, nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "worker_heartbeats",
        "consumer_dead_letters",
        "processed_messages",
        "manual_clock",
        "timers",
    ):
        op.drop_table(table)
