"""Messaging: templates, messages and their instances with timelines, contact ids, the
suppression list, webhook endpoints with their items, batches and attempts; the message a
delivery request names.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from beacon.core.db import JSONType, UtcDateTime

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None

# SQLite hands out ids only to an INTEGER PRIMARY KEY (the rowid; AUTOINCREMENT so an id is
# never handed out twice); PostgreSQL gets a bigint.
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _serial(name: str) -> sa.Column[int]:
    return sa.Column(name, SERIAL, primary_key=True, autoincrement=True)


def upgrade() -> None:
    with op.batch_alter_table("delivery_requests") as batch:
        batch.add_column(sa.Column("message_id", sa.BigInteger(), nullable=True))
    op.create_table(
        "message_templates",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("content", JSONType, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "messages",
        _serial("id"),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("template", sa.String(128), nullable=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("tag", sa.String(200), nullable=True),
        sa.Column("transactional", sa.Boolean(), nullable=False),
        sa.Column("origin", sa.String(255), nullable=True, unique=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "message_instances",
        _serial("id"),
        sa.Column("delivery_id", sa.String(36), nullable=False, unique=True),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("contact_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(512), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retry_policy", JSONType, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("content", JSONType, nullable=True),
        sa.Column("provider_id", sa.String(512), nullable=True),
        sa.Column("sending_by", sa.String(200), nullable=True),
        sa.Column("sending_until", UtcDateTime(), nullable=True),
        sa.Column("read_at", UtcDateTime(), nullable=True),
        sa.Column("unsubscribed_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sqlite_autoincrement=True,
    )
    # The delivery log's filters, each newest first by id.
    op.create_index("ix_message_instances_profile", "message_instances", ["profile_id", "id"])
    op.create_index("ix_message_instances_message", "message_instances", ["message_id", "id"])
    op.create_index("ix_message_instances_status", "message_instances", ["status", "id"])
    op.create_index("ix_message_instances_created_at", "message_instances", ["created_at"])
    op.create_table(
        "message_timeline",
        _serial("id"),
        sa.Column("instance_id", sa.BigInteger(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_message_timeline_instance", "message_timeline", ["instance_id", "id"])
    op.create_table(
        "profile_contacts",
        _serial("contact_id"),
        sa.Column("profile_id", sa.String(36), nullable=False, unique=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "suppressions",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("delivery_id", sa.String(36), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("statuses", JSONType, nullable=True),
        sa.Column("event_types", JSONType, nullable=True),
        sa.Column("options", JSONType, nullable=False),
        sa.Column("secrets", JSONType, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("disabled_at", UtcDateTime(), nullable=True),
        sa.Column("failing_since", UtcDateTime(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "webhook_items",
        _serial("id"),
        sa.Column("endpoint_id", sa.String(36), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("element", sa.Text(), nullable=False),
        sa.Column("occurred_at", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("webhook_message_id", sa.String(64), nullable=True),
        sqlite_autoincrement=True,
    )
    # A redelivered event adds nothing; a batch takes an endpoint's waiting items oldest first.
    op.create_index(
        "uq_webhook_items_endpoint_event",
        "webhook_items",
        ["endpoint_id", "event_id"],
        unique=True,
    )
    op.create_index(
        "ix_webhook_items_waiting",
        "webhook_items",
        ["endpoint_id", "id"],
        sqlite_where=sa.text("webhook_message_id IS NULL"),
        postgresql_where=sa.text("webhook_message_id IS NULL"),
    )
    op.create_table(
        "webhook_messages",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("endpoint_id", sa.String(36), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retry_policy", JSONType, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("sending_by", sa.String(200), nullable=True),
        sa.Column("sending_until", UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("first_item_at", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("delivered_at", UtcDateTime(), nullable=True),
    )
    op.create_index(
        "ix_webhook_messages_endpoint_created", "webhook_messages", ["endpoint_id", "created_at"]
    )
    op.create_index("ix_webhook_messages_status", "webhook_messages", ["status", "endpoint_id"])
    op.create_table(
        "webhook_attempts",
        _serial("id"),
        sa.Column("endpoint_id", sa.String(36), nullable=False),
        sa.Column("webhook_message_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("outcome", sa.String(24), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_webhook_attempts_endpoint", "webhook_attempts", ["endpoint_id", "id"])


def downgrade() -> None:
    for table in (
        "webhook_attempts",
        "webhook_messages",
        "webhook_items",
        "webhook_endpoints",
        "suppressions",
        "profile_contacts",
        "message_timeline",
        "message_instances",
        "messages",
        "message_templates",
    ):
        op.drop_table(table)
    with op.batch_alter_table("delivery_requests") as batch:
        batch.drop_column("message_id")
