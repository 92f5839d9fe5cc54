"""Segments and computed attributes: definitions, versions, per-profile states, memberships and
their history.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from beacon.core.db import JSONType, UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "computed_attributes",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("definition", JSONType, nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("ready_definition", JSONType, nullable=True),
        sa.Column("ready_key", sa.String(64), nullable=True),
        sa.Column("run_owner", sa.String(200), nullable=True),
        sa.Column("run_until", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "segments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("readable_version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("run_owner", sa.String(200), nullable=True),
        sa.Column("run_until", UtcDateTime(), nullable=True),
        sa.Column("progress_done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("progress_total", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("computed_at", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "segment_versions",
        sa.Column("segment_id", sa.String(36), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("rule", JSONType, nullable=False),
        sa.Column("attributes", JSONType, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "segment_catalog",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("generation", sa.Integer(), nullable=False),
    )
    op.execute("INSERT INTO segment_catalog (id, generation) VALUES (1, 0)")
    op.create_table(
        "attribute_states",
        sa.Column("profile_id", sa.String(36), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("state", JSONType, nullable=False),
        sa.Column("value", JSONType, nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    # Dropping the states of a definition no longer used, and reading one key's values.
    op.create_index("ix_attribute_states_key", "attribute_states", ["key"])
    # The primary key serves members of a segment's version in profile order (the members
    # page's cursor); the profile index serves a profile's memberships.
    op.create_table(
        "segment_members",
        sa.Column("segment_id", sa.String(36), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("profile_id", sa.String(36), primary_key=True),
        sa.Column("since", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_segment_members_profile_id", "segment_members", ["profile_id"])
    op.create_table(
        "segment_history",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("segment_id", sa.String(36), nullable=False),
        sa.Column("segment_name", sa.String(128), nullable=False),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(8), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("imported", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("event_id", sa.String(36), nullable=True),
    )
    op.create_index("ix_segment_history_profile_id_at", "segment_history", ["profile_id", "at"])
    op.create_index("ix_segment_history_segment_id_at", "segment_history", ["segment_id", "at"])
    # The changes a recompute left to record as system events, found without a scan.
    op.create_index(
        "ix_segment_history_unrecorded",
        "segment_history",
        ["id"],
        sqlite_where=sa.text("event_id IS NULL"),
        postgresql_where=sa.text("event_id IS NULL"),
    )


def downgrade() -> None:
    for table in (
        "segment_history",
        "segment_members",
        "attribute_states",
        "segment_catalog",
        "segment_versions",
        "segments",
        "computed_attributes",
    ):
        op.drop_table(table)
