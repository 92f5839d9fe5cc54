"""Identities, trait times, consents and merge pointers on profiles.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from beacon.core.db import JSONType, UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "value", name="pk_identities"),
    )
    op.create_index("ix_identities_profile_id", "identities", ["profile_id"])
    with op.batch_alter_table("profiles") as batch:
        batch.add_column(sa.Column("trait_times", JSONType, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("consents", JSONType, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("merged_into", sa.String(36), nullable=True))
        batch.add_column(sa.Column("merged_at", UtcDateTime(), nullable=True))
    op.create_index("ix_profiles_merged_at", "profiles", ["merged_at"])


def downgrade() -> None:
    op.drop_index("ix_profiles_merged_at", "profiles")
    with op.batch_alter_table("profiles") as batch:
        for column in ("merged_at", "merged_into", "consents", "trait_times"):
            batch.drop_column(column)
    op.drop_index("ix_identities_profile_id", "identities")
    op.drop_table("identities")
