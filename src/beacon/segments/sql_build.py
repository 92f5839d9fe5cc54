"""PostgreSQL: a segment version built by SQL over `events` (filled in below)."""

from __future__ import annotations

from beacon.segments.catalog import SegmentRule
from beacon.segments.recompute import Progress, SegmentBuild
from beacon.storage.writer import Writer


def supports(rule: SegmentRule) -> bool:
    """Whether SQL can build this version (else the Python path does)."""
    return False


async def build(
    writer: Writer, build: SegmentBuild, *, keep_days: int, progress: Progress | None
) -> None:
    raise NotImplementedError
