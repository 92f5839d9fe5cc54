"""The example journeys (examples/*.yaml) driven through the engine on a simulated clock.

A small in-memory integration stands in for the bus consumer and the timers: it offers each
event to the profile's active runs and then to `start`, applies effects (timers scheduled and
cancelled, messages sent) and fires due timers in time order. The tests assert the exact
effects, their idempotency keys and the runs' outcomes, as the reference scenarios describe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from beacon.journeys import effects as fx
from beacon.journeys.definition import Journey, parse_journey
from beacon.journeys.engine import advance
from beacon.journeys.entry import NotStarted, run_id_for, start
from beacon.journeys.profiles import ProfileView, SentMessage
from beacon.journeys.runs import Run
from beacon.journeys.stimuli import EventArrived, EventSnapshot, Start, Stimulus, TimerFired
from beacon.journeys.triggers import (
    date_event,
    date_moment,
    inactivity_event,
    next_scheduled,
    occurrence_attribute,
    scheduled_event,
)
from beacon.segments.attribute_state import Event, rebuild, value

yaml = pytest.importorskip("yaml", reason="PyYAML reads the example journeys")

EXAMPLES = Path(__file__).parents[2] / "src" / "beacon" / "journeys" / "examples"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def example(name: str) -> Journey:
    return parse_journey(yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text()))


@dataclass
class Simulation:
    """One journey, its runs and timers, and a clock that only moves forward."""

    journey: Journey
    profiles: dict[str, ProfileView]
    now: datetime = T0
    runs: dict[str, Run] = field(default_factory=dict)
    timers: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    history: list[EventSnapshot] = field(default_factory=list)
    sent: dict[str, list[SentMessage]] = field(default_factory=dict)
    log: list[fx.Effect] = field(default_factory=list)
    refused: list[NotStarted] = field(default_factory=list)
    counter: int = 0

    def event(
        self, kind: str, props: dict[str, Any] | None = None, *, profile: str | None = "p1"
    ) -> list[fx.Effect]:
        """An event happens now: runs see it first, then it may start one."""
        self.counter += 1
        event = EventSnapshot(f"e{self.counter}", kind, self.now, props or {}, profile)
        self.history.append(event)
        before = len(self.log)
        for run in list(self.runs.values()):
            if not run.ended and (profile is None or run.profile_id == profile):
                self.stimulate(run, EventArrived(event))
        if profile is not None:
            self.trigger(event, profile)
        return self.log[before:]

    def trigger(self, event: EventSnapshot, profile: str) -> Run | None:
        occurrence = None
        counted = occurrence_attribute(self.journey.trigger, event)
        if counted is not None:
            mine = [e for e in self.history if e.profile_id == profile]
            events = [Event(e.id, e.type, e.occurred_at, dict(e.properties)) for e in mine]
            occurrence = value(counted, rebuild(counted, events, now=self.now), now=self.now)
        mine_runs = [r for r in self.runs.values() if r.profile_id == profile]
        found = start(
            self.journey,
            version=1,
            profile=self.profiles[profile],
            trigger=event,
            existing_runs=mine_runs,
            now=self.now,
            occurrence=occurrence,
        )
        if isinstance(found, NotStarted):
            self.refused.append(found)
            return None
        self.runs[found.id] = found
        self.stimulate(found, Start())
        return self.runs[found.id]

    def stimulate(self, run: Run, stimulus: Stimulus) -> None:
        result = advance(
            self.journey,
            run,
            stimulus,
            profile=self.profiles[run.profile_id],
            now=self.now,
            sent=self.sent.get(run.profile_id, []),
        )
        self.runs[run.id] = result.run
        for effect in result.effects:
            self.log.append(effect)
            if isinstance(effect, fx.ScheduleTimer):
                self.timers[effect.key] = (effect.run_id, effect.run_at)
            elif isinstance(effect, fx.CancelTimer):
                self.timers.pop(effect.key, None)
            elif isinstance(effect, fx.RequestDelivery):
                message = SentMessage(effect.channel, self.now, effect.journey)
                self.sent.setdefault(effect.profile_id, []).append(message)

    def wait(self, span: timedelta) -> list[fx.Effect]:
        """Move the clock on by `span`, firing every timer that comes due on the way."""
        before, end = len(self.log), self.now + span
        while True:
            due = sorted((at, key) for key, (_, at) in self.timers.items() if at <= end)
            if not due:
                break
            at, key = due[0]
            run_id, _ = self.timers.pop(key)
            self.now = max(self.now, at)
            self.stimulate(self.runs[run_id], TimerFired(key))
        self.now = end
        return self.log[before:]


def deliveries(found: list[fx.Effect]) -> list[tuple[str, str, str]]:
    """(channel, first line of content or template, idempotency key) of each delivery."""
    out = []
    for effect in found:
        if isinstance(effect, fx.RequestDelivery):
            text = effect.template or next(iter((effect.content or {}).values()))
            out.append((effect.channel, text, effect.idempotency_key))
    return out


def run_of(sim: Simulation, trigger_id: str, profile: str = "p1") -> str:
    return run_id_for(sim.journey.name, profile, trigger_id)


def new(name: str, **traits: Any) -> Simulation:
    return Simulation(example(name), {"p1": ProfileView("p1", traits), "p2": ProfileView("p2")})


def test_welcome_on_signup_then_a_reminder_when_no_purchase_within_a_day() -> None:
    sim = new("welcome-purchase-reminder")
    first = sim.event("SIGNUP", {"name": "Ada"})
    run = run_of(sim, "e1")

    assert deliveries(first) == [
        ("email", "Welcome, {{ event.properties.name }}", f"{run}/welcome/1")
    ]
    welcome = first[0]
    assert isinstance(welcome, fx.RequestDelivery)
    assert welcome.variables["event"]["properties"] == {"name": "Ada"}
    timer = f"journey:{run}/wait_for_purchase/1/timeout"
    assert first[1] == fx.ScheduleTimer(run, timer, T0 + DAY)

    assert sim.wait(DAY - HOUR) == []
    later = sim.wait(HOUR)
    assert deliveries(later) == [
        ("email", "Still looking, {{ event.properties.name }}?", f"{run}/remind/1")
    ]
    assert sim.runs[run].status == "completed"
    assert [h.step for h in sim.runs[run].history] == ["welcome", "wait_for_purchase", "remind"]
    assert [h.why for h in sim.runs[run].history] == ["sent", "timeout", "sent"]


def test_a_purchase_within_the_day_converts_and_no_reminder_goes() -> None:
    sim = new("welcome-purchase-reminder")
    sim.event("SIGNUP", {"name": "Ada"})
    run = run_of(sim, "e1")
    sim.wait(5 * HOUR)

    bought = sim.event("PURCHASE", {"order_nr": "1"})

    timer = f"journey:{run}/wait_for_purchase/1/timeout"
    assert bought == [
        fx.RecordConversion(run, "welcome-purchase-reminder", "p1", "e2", sim.now, f"{run}/goal"),
        fx.CancelTimer(run, timer),
        fx.RunEnded(
            run,
            "welcome-purchase-reminder",
            "p1",
            "converted",
            "goal: PURCHASE",
            f"{run}/end",
            {"event_id": "e2"},
        ),
    ]
    assert sim.wait(3 * DAY) == []
    assert sim.runs[run].status == "converted"


def test_onboarding_reminder_only_without_signup_within_24_hours() -> None:
    sim = new("onboarding")
    sim.event("ONBOARDING_DONE", profile="p1")
    sim.event("ONBOARDING_DONE", profile="p2")
    one, two = run_of(sim, "e1"), run_of(sim, "e2", "p2")
    sim.wait(23 * HOUR)
    signed = sim.event("SIGNUP", {"name": "Ada"}, profile="p1")

    assert signed == [
        fx.CancelTimer(one, f"journey:{one}/wait_for_signup/1/timeout"),
        fx.RunEnded(one, "onboarding", "p1", "completed", "end of journey", f"{one}/end"),
    ]
    assert sim.runs[one].context["wait_for_signup"]["properties"] == {"name": "Ada"}
    reminders = sim.wait(2 * HOUR)
    assert deliveries(reminders) == [("push", "One step left", f"{two}/remind/1")]
    assert sim.runs[one].status == sim.runs[two].status == "completed"


def test_signup_is_congratulated() -> None:
    sim = new("signup-congratulation")
    found = sim.event("SIGNUP", {"name": "Ada"})
    run = run_of(sim, "e1")
    assert deliveries(found) == [
        ("push", "Congratulations, {{ event.properties.name }}!", f"{run}/congratulate/1")
    ]


def test_a_product_viewed_more_than_once_gets_one_scarcity_message() -> None:
    sim = new("product-scarcity")
    assert sim.event("VIEWPRODUCT", {"product": "1234"}) == []
    assert sim.event("VIEWPRODUCT", {"product": "999"}) == []
    second = sim.event("VIEWPRODUCT", {"product": "1234"})
    third = sim.event("VIEWPRODUCT", {"product": "1234"})

    assert deliveries(second) == [("push", "Only a few left", f"{run_of(sim, 'e3')}/scarcity/1")]
    assert third == []
    assert [r.reason for r in sim.refused] == ["occurrence", "occurrence", "once"]


def test_quiet_hours_hold_a_scarcity_push_until_morning_in_the_profiles_zone() -> None:
    sim = new("product-scarcity", timezone="America/New_York")
    sim.now = datetime(2026, 3, 3, 3, 0, tzinfo=UTC)  # 22:00 in New York, 03:00 in UTC
    sim.event("VIEWPRODUCT", {"product": "1"})
    held = sim.event("VIEWPRODUCT", {"product": "1"})
    run = run_of(sim, "e2")

    morning = datetime(2026, 3, 3, 13, 0, tzinfo=UTC)  # 08:00 in New York
    assert held == [fx.ScheduleTimer(run, f"journey:{run}/scarcity/1/defer1", morning)]
    waiting = sim.runs[run].waiting
    assert waiting is not None and waiting.kind == "quiet_hours"
    sent = sim.wait(12 * HOUR)
    assert deliveries(sent) == [("push", "Only a few left", f"{run}/scarcity/1")]
    assert sim.runs[run].history[-1].left_at == morning


def test_back_in_stock_subscribers_hear_when_their_product_is_restocked() -> None:
    sim = new("back-in-stock")
    sim.event("STOCK_ALERT_SUBSCRIBED", {"product": "A"}, profile="p1")
    sim.event("STOCK_ALERT_SUBSCRIBED", {"product": "B"}, profile="p2")
    sim.event("STOCK_ALERT_SUBSCRIBED", {"product": "A"}, profile="p2")
    a1, b2, a2 = run_of(sim, "e1"), run_of(sim, "e2", "p2"), run_of(sim, "e3", "p2")
    waiting = sim.runs[a1].waiting
    assert waiting is not None and waiting.match == {"product": "A"}
    sim.wait(3 * DAY)

    restock = sim.event("PRODUCT_RESTOCKED", {"product": "A"}, profile=None)

    assert sorted(deliveries(restock)) == sorted(
        [
            ("push", "Back in stock", f"{a1}/notify/1"),
            ("push", "Back in stock", f"{a2}/notify/1"),
        ]
    )
    assert sim.runs[b2].status == "active"
    expired = sim.wait(90 * DAY)
    assert [e for e in expired if isinstance(e, fx.RunEnded)] == [
        fx.RunEnded(b2, "back-in-stock", "p2", "exited", "no restock within 90 days", f"{b2}/end")
    ]


def test_thirty_days_of_inactivity_start_a_win_back_split_with_a_holdout() -> None:
    journey = example("win-back")
    outcomes: dict[str, int] = {}
    for index in range(400):
        profile = f"p{index}"
        sim = Simulation(journey, {profile: ProfileView(profile, {"timezone": "UTC"})})
        trigger = inactivity_event(journey.name, profile, T0 - 30 * DAY, T0)
        run = sim.trigger(trigger, profile)
        assert run is not None
        outcome = "holdout" if run.status == "exited" else run.history[0].why
        outcomes[outcome or ""] = outcomes.get(outcome or "", 0) + 1
    assert set(outcomes) == {"split:email", "split:sms", "holdout"}
    assert 150 <= outcomes["split:email"] <= 250
    assert 110 <= outcomes["split:sms"] <= 210
    assert 15 <= outcomes["holdout"] <= 70


def test_an_abandoned_cart_is_reminded_after_24_hours_once_per_cart() -> None:
    sim = new("cart-abandonment")
    props = {"cart_id": "c1", "qty": "2", "amount": "120.00", "currency": "EUR"}
    sim.event("ADDTOCART", props)
    sim.wait(2 * HOUR)
    sim.event("ADDTOCART", {**props, "qty": "3"})  # same cart: the run already waits
    run = run_of(sim, "e1")

    assert [r.reason for r in sim.refused] == ["key_active"]
    reminded = sim.wait(22 * HOUR)
    assert [d[2] for d in deliveries(reminded)] == [f"{run}/remind/1"]
    assert sim.runs[run].status == "completed"


@pytest.mark.parametrize("after", [HOUR, 23 * HOUR])
def test_a_purchase_of_the_cart_ends_its_run_at_once(after: timedelta) -> None:
    sim = new("cart-abandonment")
    sim.event("ADDTOCART", {"cart_id": "c1"})
    sim.event("ADDTOCART", {"cart_id": "c2"})
    one, two = run_of(sim, "e1"), run_of(sim, "e2")
    sim.wait(after)

    ended = sim.event("PURCHASE", {"cart_id": "c1", "order_nr": "9"})

    assert ended == [
        fx.CancelTimer(one, f"journey:{one}/wait_a_day/1/wait"),
        fx.RunEnded(
            one,
            "cart-abandonment",
            "p1",
            "exited",
            "exit: PURCHASE",
            f"{one}/end",
            {"exit": 0, "event_id": "e3"},
        ),
    ]
    later = sim.wait(DAY)
    assert [d[2] for d in deliveries(later)] == [f"{two}/remind/1"]


def test_every_purchase_is_confirmed_at_once() -> None:
    sim = new("order-confirmation")
    sim.now = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    first = sim.event(
        "PURCHASE", {"order_nr": "1", "qty": "4", "amount": "320.00", "currency": "EUR"}
    )
    second = sim.event("PURCHASE", {"order_nr": "2"})
    assert deliveries(first) == [
        (
            "email",
            "Order {{ event.properties.order_nr }} confirmed",
            f"{run_of(sim, 'e1')}/confirm/1",
        )
    ]
    assert deliveries(second)[0][2] == f"{run_of(sim, 'e2')}/confirm/1"


def test_a_shipping_status_becomes_a_push_an_email_and_a_text_message() -> None:
    sim = new("shipping-status")
    found = sim.event("SHIPPING_STATUS", {"status": "In Transit", "order_nr": "77"})
    run = run_of(sim, "e1")
    assert [(d[0], d[2]) for d in deliveries(found)] == [
        ("push", f"{run}/push/1"),
        ("email", f"{run}/email/1"),
        ("sms", f"{run}/sms/1"),
    ]
    assert isinstance(found[-1], fx.RunEnded) and found[-1].status == "completed"


def test_a_birthday_greets_at_ten_local_time_and_counts_the_greeting() -> None:
    journey = example("birthday")
    traits = {"birthday": "1990-03-05", "timezone": "Asia/Tokyo", "birthday_greetings": 2}
    profile = ProfileView("p1", traits)
    zone = journey.zone_for(traits)
    moment = date_moment(journey.trigger, traits, zone, after=T0)  # type: ignore[arg-type]
    assert moment == datetime(2026, 3, 5, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo
    assert moment is not None
    sim = Simulation(journey, {"p1": profile}, now=moment)
    trigger = date_event(journey.name, "p1", ("birthday",), moment.date(), moment)
    run = sim.trigger(trigger, "p1")
    assert run is not None and run.status == "completed"
    update = sim.log[1]
    assert update == fx.UpdateTraits(
        "p1", {}, (), {"birthday_greetings": 1}, f"{run.id}/remember/1"
    )


def test_the_weekly_digest_goes_to_segment_members_and_texts_the_vips() -> None:
    journey = example("weekly-digest")
    fires = next_scheduled(journey.trigger, journey.zone, after=T0)  # type: ignore[arg-type]
    assert fires == datetime(2026, 3, 9, 9, 0, tzinfo=UTC)  # Lisbon is on UTC in March
    vip = ProfileView("v", consents={"sms": {"granted": True}}, segments={"newsletter", "vip"})
    member = ProfileView("m", segments={"newsletter"})
    outsider = ProfileView("o")
    sim = Simulation(journey, {"v": vip, "m": member, "o": outsider}, now=fires)
    trigger = scheduled_event(journey.name, fires)
    for profile in ("v", "m", "o"):
        sim.trigger(trigger, profile)
    assert [(d[0], d[1]) for d in deliveries(sim.log)] == [
        ("email", "weekly-digest"),
        ("sms", "Your weekly picks are in your inbox."),
        ("email", "weekly-digest"),
    ]
    assert [r.reason for r in sim.refused] == ["not_in_segment"]
