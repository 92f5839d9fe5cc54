"""A journey run: one profile's way through one journey version, as plain JSON-able state.

`status`: `pending` (made by `entry.start`, not yet advanced), `active`, then one of
`completed` (a step with nowhere to go), `exited` (an exit condition, an exit step, a split's
holdout), `converted` (the goal, when it exits) or `cancelled` (`Cancel`). A conversion that
does not exit sets `converted_at` and the run goes on.

`waiting` says what an active run waits for: a timer (`wait`), an event or its timeout
(`wait_for_event`), quiet hours or a frequency cap (a deferred send). Only a `TimerFired` with
its `timer_key` moves it on; any other key is stale. `visits` counts how often the run entered
each step: with the run id and step name it makes every effect's idempotency key, so a loop
through the same step makes new keys while a redelivered stimulus repeats the old ones.
`history` keeps the last `MAX_HISTORY` steps entered (`dropped` counts the older ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, get_args

from beacon.journeys.stimuli import EventSnapshot
from beacon.segments.values import read_time, time_text

Status = Literal["pending", "active", "completed", "exited", "converted", "cancelled"]
STATUSES: tuple[Status, ...] = get_args(Status)
ENDED: frozenset[Status] = frozenset({"completed", "exited", "converted", "cancelled"})
WaitKind = Literal["timer", "event", "quiet_hours", "frequency_cap"]
MAX_HISTORY = 200
MAX_HANDLED_EVENTS = 32


@dataclass(frozen=True, slots=True)
class Waiting:
    """What an active run waits for; `match` holds the awaited event's required values."""

    kind: WaitKind
    step: str
    timer_key: str
    until: datetime
    event_type: str | None = None
    match: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": self.kind,
            "step": self.step,
            "timer_key": self.timer_key,
            "until": time_text(self.until),
        }
        if self.event_type is not None:
            body["event_type"] = self.event_type
            body["match"] = dict(self.match)
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Waiting:
        return cls(
            body["kind"],
            body["step"],
            body["timer_key"],
            _time(body["until"]),
            body.get("event_type"),
            dict(body.get("match") or {}),
        )


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A step the run entered, when it left it (None: it is there) and why it left."""

    step: str
    entered_at: datetime
    left_at: datetime | None = None
    why: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "entered_at": time_text(self.entered_at),
            "left_at": None if self.left_at is None else time_text(self.left_at),
            "why": self.why,
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> HistoryEntry:
        left = body.get("left_at")
        return cls(
            body["step"],
            _time(body["entered_at"]),
            None if left is None else _time(left),
            body.get("why"),
        )


@dataclass(frozen=True, slots=True)
class Run:
    """One run's whole state (see the module docstring)."""

    id: str
    journey: str
    version: int
    profile_id: str
    trigger: EventSnapshot
    started_at: datetime
    key: str | None = None
    status: Status = "pending"
    step: str | None = None
    waiting: Waiting | None = None
    visits: Mapping[str, int] = field(default_factory=dict)
    deferrals: int = 0
    context: Mapping[str, Any] = field(default_factory=dict)
    history: tuple[HistoryEntry, ...] = ()
    dropped: int = 0
    handled_events: tuple[str, ...] = ()
    converted_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def visit(self, step: str) -> int:
        """How many times the run has entered `step` (the current visit's number)."""
        return self.visits.get(step, 0)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "journey": self.journey,
            "version": self.version,
            "profile_id": self.profile_id,
            "trigger": self.trigger.as_json(),
            "started_at": time_text(self.started_at),
            "key": self.key,
            "status": self.status,
            "step": self.step,
            "waiting": None if self.waiting is None else self.waiting.as_json(),
            "visits": dict(self.visits),
            "deferrals": self.deferrals,
            "context": dict(self.context),
            "history": [entry.as_json() for entry in self.history],
            "dropped": self.dropped,
            "handled_events": list(self.handled_events),
            "converted_at": _text(self.converted_at),
            "ended_at": _text(self.ended_at),
            "end_reason": self.end_reason,
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Run:
        status = body["status"]
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        waiting = body.get("waiting")
        return cls(
            id=body["id"],
            journey=body["journey"],
            version=body["version"],
            profile_id=body["profile_id"],
            trigger=EventSnapshot.from_json(body["trigger"]),
            started_at=_time(body["started_at"]),
            key=body.get("key"),
            status=status,
            step=body.get("step"),
            waiting=None if waiting is None else Waiting.from_json(waiting),
            visits=dict(body.get("visits") or {}),
            deferrals=body.get("deferrals", 0),
            context=dict(body.get("context") or {}),
            history=tuple(HistoryEntry.from_json(e) for e in body.get("history") or ()),
            dropped=body.get("dropped", 0),
            handled_events=tuple(body.get("handled_events") or ()),
            converted_at=_maybe_time(body.get("converted_at")),
            ended_at=_maybe_time(body.get("ended_at")),
            end_reason=body.get("end_reason"),
        )

    def entering(self, step: str, now: datetime) -> Run:
        """The run having entered `step` at `now` (its visit count goes up by one)."""
        history = (*self.history, HistoryEntry(step, now))
        overflow = max(0, len(history) - MAX_HISTORY)
        return replace(
            self,
            step=step,
            waiting=None,
            deferrals=0,
            visits={**self.visits, step: self.visit(step) + 1},
            history=history[overflow:],
            dropped=self.dropped + overflow,
        )

    def leaving(self, why: str, now: datetime) -> Run:
        """The run having left its current step at `now`, for reason `why`."""
        if not self.history or self.history[-1].left_at is not None:
            return replace(self, waiting=None)
        last = replace(self.history[-1], left_at=now, why=why)
        return replace(self, waiting=None, history=(*self.history[:-1], last))

    def handled(self, event_id: str) -> Run:
        """The run remembering that event `event_id` changed it (a redelivery will not)."""
        kept = (*self.handled_events, event_id)[-MAX_HANDLED_EVENTS:]
        return replace(self, handled_events=kept)


def _time(text: Any) -> datetime:
    moment = read_time(text)
    if moment is None:
        raise ValueError(f"not a time: {text!r}")
    return moment


def _maybe_time(text: Any) -> datetime | None:
    return None if text is None else _time(text)


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else time_text(moment)
