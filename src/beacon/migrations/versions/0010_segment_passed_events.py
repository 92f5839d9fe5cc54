"""Segments: the events the segments consumer passed while nothing was defined, a row per batch.

Revision ID: 0010
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from beacon.core.db import UtcDateTime

revision = "0010"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "segment_passed_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("passed_at", UtcDateTime(), nullable=False),
        sa.Column("event_ids", sa.Text(), nullable=False),
    )
    op.create_index("ix_segment_passed_events_passed_at", "segment_passed_events", ["passed_at"])


def downgrade() -> None:
    op.drop_index("ix_segment_passed_events_passed_at", table_name="segment_passed_events")
    op.drop_table("segment_passed_events")
