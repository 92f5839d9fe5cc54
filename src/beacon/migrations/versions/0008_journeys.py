"""Journeys: definitions and their versions, runs with their paths, conversions and the sends
frequency caps count.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from beacon.core.db import JSONType, UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journeys",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "journey_versions",
        sa.Column("journey", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("document", JSONType, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        # The computed attributes its rules were read with (definitions), to read it again.
        sa.Column("attributes", JSONType, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "journey_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("journey", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("key", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("step", sa.String(64), nullable=True),
        # What an active run waits for, when it is an event: its type and the canonical JSON of
        # the values the awaited event must hold (profile-less events are routed by these).
        sa.Column("waiting_event_type", sa.String(128), nullable=True),
        sa.Column("waiting_match", sa.Text(), nullable=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
    )
    # A profile's runs (entry rules, its active runs, the API); a journey's runs by step (counts
    # per step, the runs list); runs waiting for an event type with a match value.
    op.create_index("ix_journey_runs_profile", "journey_runs", ["profile_id", "journey"])
    op.create_index("ix_journey_runs_journey_step", "journey_runs", ["journey", "status", "step"])
    op.create_index(
        "ix_journey_runs_waiting",
        "journey_runs",
        ["waiting_event_type", "waiting_match"],
        sqlite_where=sa.text("waiting_event_type IS NOT NULL"),
        postgresql_where=sa.text("waiting_event_type IS NOT NULL"),
    )
    op.create_table(
        "journey_run_path",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("entered_at", UtcDateTime(), nullable=False),
        sa.Column("left_at", UtcDateTime(), nullable=True),
        sa.Column("why", sa.Text(), nullable=True),
    )
    op.create_index("ix_journey_run_path_profile", "journey_run_path", ["profile_id"])
    op.create_table(
        "journey_conversions",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("journey", sa.String(100), nullable=False),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("converted_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_journey_conversions_journey", "journey_conversions", ["journey"])
    op.create_index("ix_journey_conversions_profile", "journey_conversions", ["profile_id"])
    op.create_table(
        "journey_sends",
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("journey", sa.String(100), nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_journey_sends_profile", "journey_sends", ["profile_id", "sent_at"])
    op.create_index("ix_journey_sends_sent_at", "journey_sends", ["sent_at"])


def downgrade() -> None:
    for table in (
        "journey_sends",
        "journey_conversions",
        "journey_run_path",
        "journey_runs",
        "journey_versions",
        "journeys",
    ):
        op.drop_table(table)
