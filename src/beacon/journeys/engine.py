"""The journey engine: `advance(journey, run, stimulus, ...) -> Advance(run, effects)`, pure.

No I/O, no clock, no randomness: everything it reads is passed in, so the same stimulus on the
same run state returns the same run and effects (a redelivery applies nothing new: the effects'
idempotency keys are the same), and a stale stimulus (a timer the run no longer waits on, an
event it already handled, a `Start` of a run that started) returns the run unchanged and no
effect. The integration stores the new run and applies the effects in one transaction.

- `Start()`: a `pending` run becomes active and runs from the journey's `start` step.
- `EventArrived(event)`: for an active run, an event that happened at or after the trigger
  and is not imported: first the goal (a conversion, once), then exit conditions, then the
  wait-for-event step it waits in (its timeout timer is cancelled; the event becomes
  `context.<step>`). Profile exit conditions are checked on every stimulus and every step.
- `TimerFired(key)`: the key the run waits on moves it: a wait is over, a wait-for-event timed
  out, quiet hours ended or a frequency cap opened (the send is tried again).
- `Cancel(reason)`: the run ends `cancelled`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from beacon.journeys.conditions import EventCondition
from beacon.journeys.definition import Journey
from beacon.journeys.effects import CancelTimer, Effect, RecordConversion
from beacon.journeys.pacing import FrequencyCap
from beacon.journeys.profiles import ProfileView, SentMessage
from beacon.journeys.runs import Run
from beacon.journeys.steps import Send, Wait, WaitForEvent
from beacon.journeys.stimuli import Cancel, EventArrived, EventSnapshot, Start, Stimulus, TimerFired
from beacon.journeys.walk import Walk
from beacon.segments.values import utc


@dataclass(frozen=True, slots=True)
class Advance:
    """The run after a stimulus, and what to do about it (nothing: the stimulus was stale)."""

    run: Run
    effects: tuple[Effect, ...] = ()


def advance(
    journey: Journey,
    run: Run,
    stimulus: Stimulus,
    *,
    profile: ProfileView,
    now: datetime,
    sent: Sequence[SentMessage] = (),
    default_caps: Sequence[FrequencyCap] = (),
) -> Advance:
    """Apply `stimulus` to `run` at `now` and return the new run with its effects.

    `journey` is the version the run started on; `profile` the run's profile as it is now;
    `sent` the messages sent to the profile lately (all journeys; at least as far back as the
    longest cap period), `default_caps` the deployment's default frequency caps.
    """
    utc(now)
    if run.journey != journey.name:
        raise ValueError(f"run {run.id} is of journey {run.journey!r}, not {journey.name!r}")
    if run.ended:
        return Advance(run)
    walk = Walk(journey, run, profile=profile, sent=sent, default_caps=default_caps, now=now)
    if isinstance(stimulus, Start):
        if run.status != "pending":
            return Advance(run)
        walk.run = replace(run, status="active")
        if not walk.exited_by_profile():
            walk.go(journey.start, "started")
    elif isinstance(stimulus, EventArrived):
        _event(walk, stimulus.event)
    elif isinstance(stimulus, TimerFired):
        _timer(walk, stimulus.key)
    else:
        assert isinstance(stimulus, Cancel)
        walk.end("cancelled", stimulus.reason)
    return Advance(walk.run, tuple(walk.effects))


def _event(walk: Walk, event: EventSnapshot) -> None:
    run, journey = walk.run, walk.journey
    if (
        run.status != "active"
        or event.imported
        or event.id == run.trigger.id
        or event.id in run.handled_events
        or event.occurred_at < run.trigger.occurred_at
    ):
        return
    walk.run = walk.run.handled(event.id)
    goal = journey.goal
    if goal is not None and run.converted_at is None and goal.condition.holds(event, run.trigger):
        walk.run = replace(walk.run, converted_at=walk.now)
        walk.effects.append(
            RecordConversion(
                run.id, journey.name, run.profile_id, event.id, walk.now, f"{run.id}/goal"
            )
        )
        if goal.exits:
            walk.end("converted", f"goal: {event.type}", {"event_id": event.id})
            return
    for index, condition in enumerate(journey.exits):
        if isinstance(condition, EventCondition) and condition.holds(event, run.trigger):
            walk.end("exited", f"exit: {event.type}", {"exit": index, "event_id": event.id})
            return
    if walk.exited_by_profile():
        return
    waiting = run.waiting
    step = journey.steps.get(waiting.step) if waiting is not None else None
    if (
        waiting is not None
        and waiting.kind == "event"
        and isinstance(step, WaitForEvent)
        and step.condition.holds(event, run.trigger)
    ):
        walk.effects.append(CancelTimer(run.id, waiting.timer_key))
        walk.run = replace(
            walk.run, context={**walk.run.context, step.name: event.variables()}, waiting=None
        )
        walk.go(step.on_event, f"event: {event.id}")
        return
    if walk.effects == [] and walk.run.converted_at == run.converted_at:
        walk.run = run  # the event changed nothing: remembering it would only grow the state


def _timer(walk: Walk, key: str) -> None:
    run, journey = walk.run, walk.journey
    waiting = run.waiting
    if run.status != "active" or waiting is None or waiting.timer_key != key:
        return
    step = journey.steps[waiting.step]
    walk.run = replace(run, waiting=None)  # it fired: there is nothing left to cancel
    if walk.exited_by_profile():
        return
    if waiting.kind == "timer":
        assert isinstance(step, Wait)
        walk.go(step.next, "waited")
    elif waiting.kind == "event":
        assert isinstance(step, WaitForEvent)
        walk.go(step.on_timeout, "timeout")
    else:
        assert isinstance(step, Send)
        outcome = walk.send(step)
        if outcome is not None:
            walk.go(*outcome)
