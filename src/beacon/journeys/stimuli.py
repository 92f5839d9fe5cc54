"""What moves a run: an event as journeys see it, and the four stimuli `advance` takes.

- `Start()`: run a new run (made by `entry.start`) from its first step;
- `EventArrived(event)`: an event of the run's profile (or a profile-less one it waits for):
  waits, exit conditions and the goal look at it;
- `TimerFired(key)`: a timer the run scheduled came due (a key the run no longer waits on is
  stale and changes nothing);
- `Cancel(reason)`: end the run now (the journey was stopped, the profile erased).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from beacon.segments.values import read_time, time_text, utc


@dataclass(frozen=True, slots=True)
class EventSnapshot:
    """An event as a journey sees it; `imported` events are history and never act live."""

    id: str
    type: str
    occurred_at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)
    profile_id: str | None = None
    imported: bool = False

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "occurred_at": time_text(self.occurred_at),
            "properties": dict(self.properties),
        }
        if self.profile_id is not None:
            body["profile_id"] = self.profile_id
        if self.imported:
            body["imported"] = True
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> EventSnapshot:
        moment = read_time(body["occurred_at"])
        if moment is None:
            raise ValueError(f"not a time: {body['occurred_at']!r}")
        return cls(
            id=body["id"],
            type=body["type"],
            occurred_at=moment,
            properties=dict(body.get("properties") or {}),
            profile_id=body.get("profile_id"),
            imported=bool(body.get("imported", False)),
        )

    def variables(self) -> dict[str, Any]:
        """The event as templates read it: `event.id`, `.type`, `.time`, `.properties`."""
        return {
            "id": self.id,
            "type": self.type,
            "time": time_text(utc(self.occurred_at)),
            "properties": dict(self.properties),
        }


@dataclass(frozen=True, slots=True)
class Start:
    """Run a new run from its first step."""


@dataclass(frozen=True, slots=True)
class EventArrived:
    event: EventSnapshot


@dataclass(frozen=True, slots=True)
class TimerFired:
    key: str


@dataclass(frozen=True, slots=True)
class Cancel:
    reason: str


Stimulus: TypeAlias = Start | EventArrived | TimerFired | Cancel
