"""Monthly partitions of `events` on PostgreSQL: named `events_yYYYYmMM`, created on demand.

Retention drops whole partitions, so old months leave without a long DELETE.
"""

from __future__ import annotations

from datetime import UTC, date, datetime


def month_start(value: datetime) -> date:
    """Return the first day of `value`'s month (UTC)."""
    value = value.astimezone(UTC)
    return date(value.year, value.month, 1)


def next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def partition_name(first: date) -> str:
    return f"events_y{first.year:04d}m{first.month:02d}"


def create_partition_sql(first: date) -> str:
    """Return the DDL creating the partition for the month starting on `first` (no user input)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(first)} PARTITION OF events"
        f" FOR VALUES FROM ('{first.isoformat()} 00:00:00+00')"
        f" TO ('{next_month(first).isoformat()} 00:00:00+00')"
    )
