"""How many envelopes each outbox row holds, so the relay reads rows within an envelope budget.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(
            sa.Column("envelope_count", sa.Integer(), nullable=False, server_default="1")
        )
    # Rows still waiting for the relay: count what they hold.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE outbox SET envelope_count = json_array_length(envelopes::json)")
    else:
        op.execute("UPDATE outbox SET envelope_count = json_array_length(envelopes)")


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("envelope_count")
