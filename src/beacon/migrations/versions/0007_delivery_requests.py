"""Delivery requests: what journeys and back-ends hand to messaging.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from beacon.core.db import JSONType, UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_requests",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("template", sa.String(128), nullable=True),
        sa.Column("content", JSONType, nullable=True),
        sa.Column("variables", JSONType, nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("requested_at", UtcDateTime(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
    )
    op.create_index(
        "ix_delivery_requests_profile_requested_at",
        "delivery_requests",
        ["profile_id", "requested_at"],
    )


def downgrade() -> None:
    op.drop_table("delivery_requests")
