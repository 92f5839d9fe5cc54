"""The ingest pipeline's event checks, one row at a time: a bad row is refused, not the batch.

The same rules as `ingest/pipeline.validate_events`: size of properties and context, time
between 1970 and a day from now, registration and schema of the event type. Imported events
keep their own time and are marked `imported`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from beacon.core import jsonio
from beacon.core.ids import new_id
from beacon.events.event_types import CompiledEventType
from beacon.imports.rows import BadRow
from beacon.ingest.commands import NewEvent
from beacon.ingest.pipeline import EARLIEST, MAX_FUTURE_SKEW, RawEvent, event_time

# JSON re-encoded from a source text is at most a few times longer (`1e15` → `1000000000000000.0`
# is the worst case); rows shorter than the limit over this factor skip the exact size check.
SIZE_SAFETY_FACTOR = 8


@dataclass(slots=True)
class EventChecker:
    """Checks rows against the settings and event types read once at the start of an import."""

    types: dict[str, CompiledEventType]
    require_registered: bool
    max_event_bytes: int
    now: datetime
    retention_days: int
    retention_by_type: dict[str, int] = field(default_factory=dict)
    _cutoffs: dict[str, datetime] = field(default_factory=dict)

    def new_event(self, raw: RawEvent, *, source_bytes: int | None = None) -> NewEvent:
        """Return the event to store, or raise `BadRow` saying why it cannot be."""
        limit = self.max_event_bytes
        if source_bytes is None or source_bytes * SIZE_SAFETY_FACTOR > limit:
            size = len(jsonio.dumps(raw.properties)) + len(jsonio.dumps(raw.context))
            if size > limit:
                raise BadRow(
                    "too_large", f"properties and context take {size} bytes; at most {limit}"
                )
        if raw.time is None:
            raise BadRow("missing_time", "an imported event needs the time it happened")
        occurred_at = event_time(raw.time)
        if occurred_at is None or not EARLIEST <= occurred_at <= self.now + MAX_FUTURE_SKEW:
            raise BadRow("time_out_of_range", "the time must lie between 1970 and one day from now")
        errors: list[dict[str, Any]] | None = None
        event_type = self.types.get(raw.type)
        if event_type is None and self.require_registered:
            raise BadRow("unregistered_type", f"event type {raw.type!r} is not registered")
        if event_type is not None:
            errors = event_type.check(raw.properties) or None
            if errors and event_type.mode == "enforce":
                raise BadRow(
                    "schema_violation", "; ".join(f"{e['path']}: {e['message']}" for e in errors)
                )
        return NewEvent(
            id=new_id(),
            type=raw.type,
            occurred_at=occurred_at,
            properties=raw.properties,
            context=raw.context,
            external_id=raw.external_id,
            valid=errors is None,
            errors=errors,
            imported=True,
        )

    def expired(self, event: NewEvent) -> bool:
        """Whether the next retention pass deletes this event (it is older than its retention)."""
        cutoff = self._cutoffs.get(event.type)
        if cutoff is None:
            days = self.retention_by_type.get(event.type, self.retention_days)
            cutoff = self._cutoffs[event.type] = self.now - timedelta(days=days)
        return event.occurred_at < cutoff
