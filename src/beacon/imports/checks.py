"""The ingest pipeline's event checks, one row at a time: a bad row is refused, not the batch.

The rules are `ingest/pipeline.check_event`'s, the same as for events sent live. An imported
event must carry its own time, and is marked `imported`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from beacon.imports.rows import BadRow
from beacon.ingest.commands import NewEvent
from beacon.ingest.pipeline import EventRules, RawEvent, check_event, event_time

# JSON re-encoded from a source text is at most a few times longer (`1e15` → `1000000000000000.0`
# is the worst case); rows shorter than the limit over this factor skip the exact size check.
SIZE_SAFETY_FACTOR = 8


@dataclass(slots=True)
class EventChecker:
    """Checks rows against the settings and event types read once at the start of an import."""

    rules: EventRules
    now: datetime
    retention_days: int
    retention_by_type: dict[str, int] = field(default_factory=dict)
    _cutoffs: dict[str, datetime] = field(default_factory=dict)

    def new_event(self, raw: RawEvent, *, source_bytes: int | None = None) -> NewEvent:
        """Return the event to store, or raise `BadRow` saying why it cannot be."""
        if raw.time is None:
            raise BadRow("missing_time", "an imported event needs the time it happened")
        limit = self.rules.max_event_bytes
        measure = source_bytes is None or source_bytes * SIZE_SAFETY_FACTOR > limit
        checked = check_event(
            raw, event_time(raw.time), self.rules, now=self.now, imported=True, measure=measure
        )
        if isinstance(checked, NewEvent):
            return checked
        raise BadRow(checked.code, checked.message)

    def expired(self, event: NewEvent) -> bool:
        """Whether the next retention pass deletes this event (it is older than its retention)."""
        cutoff = self._cutoffs.get(event.type)
        if cutoff is None:
            days = self.retention_by_type.get(event.type, self.retention_days)
            cutoff = self._cutoffs[event.type] = self.now - timedelta(days=days)
        return event.occurred_at < cutoff
