"""Running a run's steps from where it is until it must wait or ends, collecting effects.

A `Walk` is one call of `engine.advance` in progress: the run so far, the profile as this
walk changed it (trait updates), the messages sent (frequency caps count this walk's too) and
the effects. Steps without a wait follow each other at once; the document's validation
guarantees every circle of steps holds a wait, so a walk always stops.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, time, timedelta
from typing import Any

from beacon.identity.traits import TraitOp, apply_trait_ops
from beacon.journeys import effects
from beacon.journeys.conditions import ProfileCondition
from beacon.journeys.definition import Journey
from beacon.journeys.pacing import FrequencyCap, FrequencyCaps, capped
from beacon.journeys.profiles import ProfileView, SentMessage
from beacon.journeys.runs import Run, Status, Waiting, WaitKind
from beacon.journeys.steps import (
    Branch,
    Emit,
    Exit,
    Send,
    Split,
    Step,
    TraitUpdate,
    Wait,
    WaitForEvent,
    Webhook,
)
from beacon.journeys.templates import render
from beacon.journeys.times import at_local, next_local_time, read_date
from beacon.segments.values import lookup, time_text

Next = tuple[str | None, str]
"""Where the run goes after a step (None: nowhere, it completes) and why it left."""
TIMER_PREFIX = "journey:"
_BASIS_POINTS = 10_000
_DAY = timedelta(days=1)


class Walk:
    def __init__(
        self,
        journey: Journey,
        run: Run,
        *,
        profile: ProfileView,
        sent: Sequence[SentMessage],
        default_caps: Sequence[FrequencyCap],
        now: datetime,
    ) -> None:
        self.journey = journey
        self.run = run
        self.profile = profile
        self.sent = list(sent)
        self.default_caps = default_caps
        self.now = now
        self.effects: list[effects.Effect] = []

    def key(self, step: str, suffix: str = "") -> str:
        """The idempotency key of the current visit of `step` (with `suffix`, one of several)."""
        base = f"{self.run.id}/{step}/{self.run.visit(step)}"
        return f"{base}/{suffix}" if suffix else base

    def go(self, target: str | None, why: str) -> None:
        """Leave the current step for `target`, then run steps until one waits or the run ends."""
        limit = 2 * len(self.journey.steps) + 2
        for _ in range(limit):
            self.run = self.run.leaving(why, self.now)
            if target is None:
                self.end("completed", "end of journey")
                return
            self.run = self.run.entering(target, self.now)
            if self.exited_by_profile():
                return
            outcome = self.execute(self.journey.steps[target])
            if outcome is None:
                return
            target, why = outcome
        raise AssertionError(f"{self.journey.name}: steps ran in a circle without a wait")

    def execute(self, step: Step) -> Next | None:
        """Do what `step` does now; return where to go, or None when the run waits or ended."""
        if isinstance(step, Wait):
            return self.wait(step)
        if isinstance(step, WaitForEvent):
            until = self.now + step.timeout
            match = step.condition.match_values(self.run.trigger)
            self.hold(step.name, "event", "timeout", until, step.condition.event_type, match)
            return None
        if isinstance(step, Branch):
            holds = step.condition.holds(self.profile, self.run.trigger, now=self.now)
            return (step.then, "then") if holds else (step.otherwise, "else")
        if isinstance(step, Split):
            return self.split(step)
        if isinstance(step, Send):
            return self.send(step)
        if isinstance(step, Webhook):
            return self.webhook(step)
        if isinstance(step, TraitUpdate):
            return self.update_traits(step)
        if isinstance(step, Emit):
            properties = render(dict(step.properties), self.variables())
            self.effects.append(
                effects.EmitEvent(self.profile.id, step.event_type, properties, self.key(step.name))
            )
            return step.next, "emitted"
        assert isinstance(step, Exit)
        self.end("exited", step.reason)
        return None

    def wait(self, step: Wait) -> Next | None:
        zone = step.zone or self.journey.zone_for(self.profile.traits)
        until: datetime | None
        if step.duration is not None:
            until = self.now + step.duration
        elif step.until_time is not None:
            until = next_local_time(step.until_time, zone, after=self.now)
        elif step.until is not None:
            until = step.until
        else:
            assert step.until_trait is not None
            day = read_date(lookup(self.profile.traits, step.until_trait))
            if day is None:
                return step.next, "no_date"
            until = at_local(day + step.offset_days * _DAY, step.at or time(0, 0), zone)
        if until <= self.now:
            return step.next, "moment_passed"
        self.hold(step.name, "timer", "wait", until)
        return None

    def split(self, step: Split) -> Next | None:
        digest = hashlib.sha256(self.key(step.name).encode()).digest()
        draw = int.from_bytes(digest[:8], "big") % _BASIS_POINTS
        bound = 0
        for branch in step.branches:
            bound += int(branch.percent * 100)
            if draw < bound:
                return branch.next, f"split:{branch.name}"
        self.end("exited", "holdout", {"step": step.name})
        return None

    def send(self, step: Send) -> Next | None:
        """Send now, or wait for quiet hours to end or a cap to open, or skip (capped)."""
        if not step.transactional:
            quiet = self.journey.quiet_hours
            zone = self.journey.zone_for(self.profile.traits)
            ends = None if quiet is None else quiet.ends_at(zone, now=self.now)
            if ends is not None:
                self.defer(step.name, "quiet_hours", ends)
                return None
            caps = self.journey.caps or FrequencyCaps()
            held = capped(
                caps,
                channel=step.channel,
                journey=self.journey.name,
                sent=self.sent,
                defaults=self.default_caps,
                now=self.now,
            )
            if held is not None and caps.when_capped == "defer":
                self.defer(step.name, "frequency_cap", held.opens_at)
                return None
            if held is not None:
                detail = {
                    "scope": held.scope,
                    "max": held.cap.max,
                    "period_seconds": int(held.cap.period.total_seconds()),
                    "opens_at": time_text(held.opens_at),
                }
                self.effects.append(
                    effects.SendSkipped(
                        self.run.id,
                        self.journey.name,
                        self.profile.id,
                        step.channel,
                        "frequency_cap",
                        detail,
                        self.key(step.name),
                    )
                )
                return step.next, "skipped:frequency_cap"
        variables = self.variables(step.context)
        self.effects.append(
            effects.RequestDelivery(
                self.run.id,
                self.journey.name,
                self.profile.id,
                step.channel,
                step.template,
                step.content,
                variables,
                self.key(step.name),
            )
        )
        self.sent.append(SentMessage(step.channel, self.now, self.journey.name))
        return step.next, "sent"

    def webhook(self, step: Webhook) -> Next:
        scope = self.variables()
        self.effects.append(
            effects.CallWebhook(
                self.run.id,
                str(render(step.url, scope)),
                step.method,
                {name: str(render(value, scope)) for name, value in step.headers.items()},
                render(step.body, scope),
                self.key(step.name),
            )
        )
        return step.next, "called"

    def update_traits(self, step: TraitUpdate) -> Next:
        values = render(dict(step.set), self.variables())
        ops = [TraitOp("set", name, value) for name, value in values.items()]
        ops += [TraitOp("increment", name, value) for name, value in step.increment.items()]
        ops += [TraitOp("unset", name) for name in step.unset]
        traits, _ = apply_trait_ops(dict(self.profile.traits), {}, ops, time_text(self.now))
        # Later steps of this walk (branches, templates) see the traits as they will be.
        self.profile = replace(self.profile, traits=traits)
        self.effects.append(
            effects.UpdateTraits(
                self.profile.id, values, step.unset, dict(step.increment), self.key(step.name)
            )
        )
        return step.next, "updated"

    def variables(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What templates read now: profile, event (the trigger) and context (+ `extra`)."""
        scope: dict[str, Any] = {
            "profile": self.profile.variables(),
            "event": self.run.trigger.variables(),
            "context": dict(self.run.context),
        }
        if extra:
            scope["context"] |= render(dict(extra), scope)
        return scope

    def hold(
        self,
        step: str,
        kind: WaitKind,
        purpose: str,
        until: datetime,
        event_type: str | None = None,
        match: dict[str, Any] | None = None,
    ) -> None:
        """Make the run wait in `step` for a timer at `until` (and an event, for `event`)."""
        timer = f"{TIMER_PREFIX}{self.key(step, purpose)}"
        waiting = Waiting(kind, step, timer, until, event_type, match or {})
        self.run = replace(self.run, waiting=waiting)
        self.effects.append(effects.ScheduleTimer(self.run.id, timer, until))

    def defer(self, step: str, kind: WaitKind, until: datetime) -> None:
        self.run = replace(self.run, deferrals=self.run.deferrals + 1)
        self.hold(step, kind, f"defer{self.run.deferrals}", until)

    def exited_by_profile(self) -> bool:
        """End the run if a `when` exit condition holds for the profile now."""
        for index, condition in enumerate(self.journey.exits):
            if isinstance(condition, ProfileCondition) and condition.holds(
                self.profile, self.run.trigger, now=self.now
            ):
                self.end("exited", "exit condition", {"exit": index})
                return True
        return False

    def end(self, status: Status, reason: str, detail: dict[str, Any] | None = None) -> None:
        """End the run (cancelling the timer it waits on) and say so."""
        if self.run.waiting is not None:
            self.effects.append(effects.CancelTimer(self.run.id, self.run.waiting.timer_key))
        self.run = replace(
            self.run.leaving(reason, self.now),
            status=status,
            ended_at=self.now,
            end_reason=reason,
        )
        self.effects.append(
            effects.RunEnded(
                self.run.id,
                self.journey.name,
                self.profile.id,
                status,
                reason,
                f"{self.run.id}/end",
                detail or {},
            )
        )
