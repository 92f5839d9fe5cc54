"""The engine: entry rules, every step kind, exits, goals, splits, caps, quiet hours, and that
advancing is idempotent (the same stimulus on the same state gives the same effects) and
ignores stale stimuli."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon.journeys import effects as fx
from beacon.journeys.cron import next_fire, parse_cron
from beacon.journeys.definition import Journey, parse_journey
from beacon.journeys.engine import Advance, advance
from beacon.journeys.entry import NotStarted, run_id_for, start
from beacon.journeys.pacing import FrequencyCap
from beacon.journeys.profiles import ProfileView, SentMessage
from beacon.journeys.runs import Run
from beacon.journeys.stimuli import (
    Cancel,
    EventArrived,
    EventSnapshot,
    Start,
    Stimulus,
    TimerFired,
)
from beacon.journeys.triggers import DateTrigger, date_moment

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
PROFILE = ProfileView("p1", {"first_name": "Ada"})


def journey(steps: dict[str, Any], **more: Any) -> Journey:
    document = {
        "name": "j",
        "trigger": {"type": "event", "event": "GO"},
        "entry": {"mode": "every_time"},
        "start": next(iter(steps)),
        "steps": steps,
        **more,
    }
    return parse_journey(document)


def send(name: str = "hello", channel: str = "push", **more: Any) -> dict[str, Any]:
    content = {"push": {"title": "Hi", "body": "{{ profile.traits.first_name }}"}}
    content["email"] = {"subject": "Hi", "text": "Hello"}
    content["sms"] = {"text": "Hi"}
    return {"type": "send", "channel": channel, "content": content[channel], **more}


def go(event_id: str = "t1", at: datetime = T0, **props: Any) -> EventSnapshot:
    return EventSnapshot(event_id, "GO", at, props, "p1")


def begin(
    j: Journey,
    *,
    profile: ProfileView = PROFILE,
    trigger: EventSnapshot | None = None,
    now: datetime = T0,
    **more: Any,
) -> Advance:
    found = start(
        j, version=1, profile=profile, trigger=trigger or go(at=now), existing_runs=[], now=now
    )
    assert isinstance(found, Run), found
    return advance(j, found, Start(), profile=profile, now=now, **more)


def step(j: Journey, run: Run, stimulus: Stimulus, now: datetime, **more: Any) -> Advance:
    more.setdefault("profile", PROFILE)
    return advance(j, run, stimulus, now=now, **more)


def kinds(found: Advance) -> list[str]:
    return [type(effect).__name__ for effect in found.effects]


def test_start_refuses_imported_and_other_events_and_keeps_entry_rules() -> None:
    once = journey({"a": send()}, entry={"mode": "once"})
    imported = EventSnapshot("t1", "GO", T0, {}, "p1", imported=True)
    other = EventSnapshot("t1", "STOP", T0, {}, "p1")

    def reason(j: Journey, trigger: EventSnapshot, runs: list[Run]) -> str | None:
        found = start(j, version=1, profile=PROFILE, trigger=trigger, existing_runs=runs, now=T0)
        return found.reason if isinstance(found, NotStarted) else None

    first = start(once, version=3, profile=PROFILE, trigger=go(), existing_runs=[], now=T0)
    assert isinstance(first, Run)
    assert (first.id, first.version, first.status) == (run_id_for("j", "p1", "t1"), 3, "pending")
    assert reason(once, imported, []) == "imported"
    assert reason(once, other, []) == "not_triggered"
    assert reason(once, go(), [first]) == "duplicate"
    assert reason(once, go("t2"), [first]) == "once"

    cooldown = journey({"a": send()}, entry={"mode": "cooldown", "cooldown": "7d"})
    assert reason(cooldown, go("t2"), [first]) == "cooldown"
    later = start(
        cooldown,
        version=1,
        profile=PROFILE,
        trigger=go("t2"),
        existing_runs=[first],
        now=T0 + 8 * DAY,
    )
    assert isinstance(later, Run)

    keyed = journey({"a": send()}, entry={"mode": "every_time", "key": "cart"})
    cart = start(keyed, version=1, profile=PROFILE, trigger=go(cart="c1"), existing_runs=[], now=T0)
    assert isinstance(cart, Run) and cart.key == "c1"
    assert reason(keyed, go("t2", cart="c1"), [cart]) == "key_active"
    assert reason(keyed, go("t2"), [cart]) == "no_key"
    assert reason(keyed, go("t2", cart="c2"), [cart]) is None

    capped = journey({"a": send()}, entry={"mode": "every_time", "max_concurrent": 1})
    assert reason(capped, go("t2"), [first]) == "max_concurrent"


def test_wait_holds_the_run_until_its_timer_and_stale_timers_do_nothing() -> None:
    j = journey({"pause": {"type": "wait", "duration": "2h", "next": "hello"}, "hello": send()})
    started = begin(j)
    run = started.run
    key = f"journey:{run.id}/pause/1/wait"
    assert started.effects == (fx.ScheduleTimer(run.id, key, T0 + 2 * HOUR),)

    stale = step(j, run, TimerFired(f"journey:{run.id}/pause/0/wait"), T0 + 2 * HOUR)
    assert stale == Advance(run)
    fired = step(j, run, TimerFired(key), T0 + 2 * HOUR)
    assert kinds(fired) == ["RequestDelivery", "RunEnded"]
    assert step(j, fired.run, TimerFired(key), T0 + 3 * HOUR) == Advance(fired.run)


def test_the_same_stimulus_on_the_same_state_gives_the_same_effects() -> None:
    j = journey(
        {
            "hello": send(next="wait"),
            "wait": {
                "type": "wait_for_event",
                "event": "PAID",
                "timeout": "1d",
                "on_event": "thanks",
                "on_timeout": "nudge",
            },
            "thanks": send("thanks"),
            "nudge": send("nudge"),
        }
    )
    pending = start(j, version=1, profile=PROFILE, trigger=go(), existing_runs=[], now=T0)
    assert isinstance(pending, Run)
    once = step(j, pending, Start(), T0)
    again = step(j, pending, Start(), T0)
    assert once == again
    assert step(j, once.run, Start(), T0) == Advance(once.run)

    paid = EventArrived(EventSnapshot("e2", "PAID", T0 + HOUR, {}, "p1"))
    first = step(j, once.run, paid, T0 + HOUR)
    assert first == step(j, once.run, paid, T0 + HOUR)
    assert step(j, first.run, paid, T0 + HOUR) == Advance(first.run)
    keys = [getattr(e, "idempotency_key", None) for e in first.effects]
    run = pending.id
    assert keys == [
        f"journey:{run}/wait/1/timeout/cancel",
        f"{run}/thanks/1",
        f"{run}/end",
    ]


def test_the_trigger_itself_and_events_before_it_do_not_act_on_the_run() -> None:
    j = journey(
        {
            "w": {"type": "wait_for_event", "event": "GO", "timeout": "1h", "on_timeout": "x"},
            "x": {"type": "exit"},
        }
    )
    run = begin(j).run
    again = EventArrived(go())
    earlier = EventArrived(EventSnapshot("e0", "GO", T0 - HOUR, {}, "p1"))
    imported = EventArrived(EventSnapshot("e9", "GO", T0 + HOUR, {}, "p1", imported=True))
    for stimulus in (again, earlier, imported):
        assert step(j, run, stimulus, T0 + HOUR) == Advance(run)


def test_wait_for_event_matches_filters_and_the_triggers_property() -> None:
    j = journey(
        {
            "w": {
                "type": "wait_for_event",
                "event": "PAID",
                "where": [{"property": "amount", "op": "gte", "value": 10}],
                "match": {"order": "order_id"},
                "timeout": "1d",
                "on_event": "thanks",
                "on_timeout": "bye",
            },
            "thanks": send("thanks"),
            "bye": {"type": "exit", "reason": "unpaid"},
        }
    )
    run = begin(j, trigger=go(order_id="o1")).run
    assert run.waiting is not None
    assert (run.waiting.event_type, dict(run.waiting.match)) == ("PAID", {"order": "o1"})

    def paid(eid: str, **props: Any) -> EventArrived:
        return EventArrived(EventSnapshot(eid, "PAID", T0 + HOUR, props, "p1"))

    assert step(j, run, paid("a", order="o2", amount=50), T0 + HOUR).effects == ()
    assert step(j, run, paid("b", order="o1", amount=5), T0 + HOUR).effects == ()
    matched = step(j, run, paid("c", order="o1", amount="12.5"), T0 + HOUR)
    assert kinds(matched) == ["CancelTimer", "RequestDelivery", "RunEnded"]
    timeout = step(j, run, TimerFired(run.waiting.timer_key), T0 + DAY)
    assert timeout.run.status == "exited" and timeout.run.end_reason == "unpaid"


def test_wait_until_a_time_of_day_a_moment_or_a_trait_date() -> None:
    tokyo = journey(
        {
            "w": {"type": "wait", "until_time": "09:00", "time_zone": "Asia/Tokyo", "next": "s"},
            "s": send(),
        }
    )
    assert begin(tokyo).run.waiting.until == datetime(2026, 6, 2, 0, 0, tzinfo=UTC)  # type: ignore[union-attr]
    fixed = journey(
        {"w": {"type": "wait", "until": "2026-06-01T11:00:00Z", "next": "s"}, "s": send()}
    )
    assert kinds(begin(fixed)) == ["RequestDelivery", "RunEnded"]  # the moment has passed
    trait = journey(
        {
            "w": {
                "type": "wait",
                "until_trait": "renewal",
                "offset_days": -3,
                "time": "10:00",
                "next": "s",
            },
            "s": send(),
        },
        time_zone_trait="tz",
    )
    profile = ProfileView("p1", {"renewal": "2026-07-10", "tz": "Europe/Kyiv"})
    assert begin(trait, profile=profile).run.waiting.until == datetime(  # type: ignore[union-attr]
        2026, 7, 7, 7, 0, tzinfo=UTC
    )
    undated = begin(trait)
    assert undated.run.history[0].why == "no_date"


def test_branch_reads_rules_segments_and_the_trigger() -> None:
    j = journey(
        {
            "b": {
                "type": "branch",
                "if": {
                    "rule": {"consent": "email", "granted": True},
                    "in_segment": "vip",
                    "trigger": [{"property": "total", "op": "gt", "value": 100}],
                },
                "then": "yes",
                "else": "no",
            },
            "yes": send("yes"),
            "no": {"type": "exit", "reason": "not vip"},
        }
    )
    vip = ProfileView("p1", consents={"email": {"granted": True}}, segments={"vip"})
    assert begin(j, profile=vip, trigger=go(total=150)).run.history[0].why == "then"
    assert begin(j, profile=vip, trigger=go(total=50)).run.history[0].why == "else"
    assert begin(j, trigger=go(total=150)).run.end_reason == "not vip"


def test_webhook_emit_and_trait_updates_fill_in_variables_and_later_steps_see_traits() -> None:
    j = journey(
        {
            "count": {
                "type": "update_traits",
                "set": {"last_cart": "{{ event.properties.cart }}"},
                "increment": {"nudges": 1},
                "unset": ["stale"],
                "next": "hook",
            },
            "hook": {
                "type": "webhook",
                "url": "https://crm.example/{{ profile.id }}",
                "headers": {"X-Cart": "{{ event.properties.cart }}"},
                "body": {
                    "cart": "{{ event.properties.cart }}",
                    "n": "{{ event.properties.n }}",
                    "text": "cart {{ event.properties.cart }} of {{ profile.traits.first_name }}",
                },
                "next": "tell",
            },
            "tell": {
                "type": "emit",
                "event": "nudged",
                "properties": {"n": "{{ profile.traits.nudges }}"},
                "next": "check",
            },
            "check": {
                "type": "branch",
                "if": {"rule": {"trait": "nudges", "op": "gte", "value": 3}},
                "then": "stop",
            },
            "stop": {"type": "exit", "reason": "enough"},
        }
    )
    profile = ProfileView("p1", {"first_name": "Ada", "nudges": 2, "stale": True})
    found = begin(j, profile=profile, trigger=go(cart="c9", n=4))
    run = found.run.id
    assert found.effects[:3] == (
        fx.UpdateTraits("p1", {"last_cart": "c9"}, ("stale",), {"nudges": 1}, f"{run}/count/1"),
        fx.CallWebhook(
            run,
            "https://crm.example/p1",
            "POST",
            {"X-Cart": "c9"},
            {"cart": "c9", "n": 4, "text": "cart c9 of Ada"},
            f"{run}/hook/1",
        ),
        fx.EmitEvent("p1", "nudged", {"n": 3}, f"{run}/tell/1"),
    )
    assert found.run.end_reason == "enough"


def test_profile_exit_conditions_end_the_run_at_any_step_and_event_exits_on_any_step() -> None:
    j = journey(
        {"w": {"type": "wait", "duration": "1h", "next": "s"}, "s": send()},
        exit=[{"when": {"in_segment": "unsubscribed"}}, {"event": "STOP"}],
    )
    gone = ProfileView("p1", segments={"unsubscribed"})
    assert begin(j, profile=gone).run.status == "exited"
    run = begin(j).run
    fired = step(j, run, TimerFired(run.waiting.timer_key), T0 + HOUR, profile=gone)  # type: ignore[union-attr]
    assert kinds(fired) == ["RunEnded"] and fired.run.end_reason == "exit condition"
    stopped = step(j, run, EventArrived(EventSnapshot("s", "STOP", T0, {}, "p1")), T0)
    assert kinds(stopped) == ["CancelTimer", "RunEnded"]


def test_a_goal_counts_once_and_the_run_goes_on_unless_it_exits() -> None:
    j = journey(
        {"w": {"type": "wait", "duration": "1d", "next": "s"}, "s": send()},
        goal={"event": "PAID"},
    )
    run = begin(j).run
    paid = step(j, run, EventArrived(EventSnapshot("e1", "PAID", T0, {}, "p1")), T0 + HOUR)
    assert kinds(paid) == ["RecordConversion"] and paid.run.converted_at == T0 + HOUR
    again = step(j, paid.run, EventArrived(EventSnapshot("e2", "PAID", T0, {}, "p1")), T0 + HOUR)
    assert again == Advance(paid.run)
    done = step(j, paid.run, TimerFired(run.waiting.timer_key), T0 + DAY)  # type: ignore[union-attr]
    assert done.run.status == "completed" and done.run.converted_at == T0 + HOUR


def test_cancel_ends_the_run_and_cancels_its_timer() -> None:
    j = journey({"w": {"type": "wait", "duration": "1d"}})
    run = begin(j).run
    cancelled = step(j, run, Cancel("journey stopped"), T0)
    assert kinds(cancelled) == ["CancelTimer", "RunEnded"]
    assert cancelled.run.status == "cancelled"
    assert step(j, cancelled.run, Cancel("again"), T0) == Advance(cancelled.run)


SPLIT = journey(
    {
        "s": {
            "type": "split",
            "branches": [
                {"name": "a", "percent": 33.33, "next": "x"},
                {"name": "b", "percent": 56.67, "next": "x"},
            ],
            "holdout": 10,
        },
        "x": {"type": "exit"},
    }
)


@settings(max_examples=50)
@given(st.text(min_size=1, max_size=20))
def test_a_split_draw_is_fixed_for_a_run(trigger_id: str) -> None:
    first = begin(SPLIT, trigger=go(trigger_id))
    assert begin(SPLIT, trigger=go(trigger_id)) == first


def test_split_percentages_hold_over_many_runs() -> None:
    counts = {"split:a": 0, "split:b": 0, "holdout": 0}
    for index in range(3000):
        run = begin(SPLIT, trigger=go(f"t{index}")).run
        counts["holdout" if run.end_reason == "holdout" else run.history[0].why or ""] += 1
    assert 900 <= counts["split:a"] <= 1100
    assert 1600 <= counts["split:b"] <= 1800
    assert 230 <= counts["holdout"] <= 370


def caps(when: str = "skip", **more: Any) -> Journey:
    return journey(
        {"s": send(channel="email")},
        frequency_caps={
            "limits": [{"channel": "email", "max": 2, "period": "1d"}],
            "when_capped": when,
            **more,
        },
    )


def sent(*hours_ago: float, journey: str | None = "j") -> list[SentMessage]:
    return [SentMessage("email", T0 - timedelta(hours=h), journey) for h in hours_ago]


def test_a_capped_send_is_skipped_with_the_reason() -> None:
    found = begin(caps(), sent=sent(1, 5))
    run = found.run.id
    assert found.effects[0] == fx.SendSkipped(
        run,
        "j",
        "p1",
        "email",
        "frequency_cap",
        {
            "scope": "journey",
            "max": 2,
            "period_seconds": 86400,
            "opens_at": "2026-06-02T07:00:00.000000+00:00",
        },
        f"{run}/s/1",
    )
    assert kinds(begin(caps(), sent=sent(1, 30))) == ["RequestDelivery", "RunEnded"]
    other_journeys = sent(1, 5, journey="other")
    assert kinds(begin(caps(), sent=other_journeys)) == ["RequestDelivery", "RunEnded"]


def test_default_caps_count_every_message_unless_the_journey_leaves_them_out() -> None:
    defaults = [FrequencyCap("email", 1, DAY)]
    elsewhere = sent(2, journey=None)
    assert kinds(begin(caps(), sent=elsewhere, default_caps=defaults))[0] == "SendSkipped"
    free = caps(include_defaults=False)
    assert kinds(begin(free, sent=elsewhere, default_caps=defaults))[0] == "RequestDelivery"
    transactional = journey({"s": send(channel="email", transactional=True)})
    assert kinds(begin(transactional, sent=elsewhere, default_caps=defaults))[0] == (
        "RequestDelivery"
    )


def test_a_deferred_send_waits_for_the_cap_to_open_and_tries_again() -> None:
    j = caps("defer")
    held = begin(j, sent=sent(1, 5))
    run = held.run
    key = f"journey:{run.id}/s/1/defer1"
    assert held.effects == (fx.ScheduleTimer(run.id, key, T0 + 19 * HOUR),)
    # Meanwhile another message went out: the cap holds it once more.
    again = step(j, run, TimerFired(key), T0 + 19 * HOUR, sent=sent(1, 0.5, -18.5))
    assert again.effects == (
        fx.ScheduleTimer(
            run.id, f"journey:{run.id}/s/1/defer2", T0 + 23 * HOUR + 30 * 60 * timedelta(seconds=1)
        ),
    )
    later = T0 + 24 * HOUR
    done = step(j, again.run, TimerFired(f"journey:{run.id}/s/1/defer2"), later, sent=sent(1, 5))
    assert kinds(done) == ["RequestDelivery", "RunEnded"]
    assert done.effects[0].idempotency_key == f"{run.id}/s/1"


def test_quiet_hours_follow_the_profiles_zone_else_the_journeys() -> None:
    j = journey(
        {"s": send()},
        quiet_hours={"start": "22:00", "end": "07:00"},
        time_zone="Europe/Berlin",
        time_zone_trait="tz",
    )
    night_utc = datetime(2026, 6, 1, 21, 30, tzinfo=UTC)  # 23:30 in Berlin, 14:30 in LA
    la = ProfileView("p1", {"tz": "America/Los_Angeles"})
    assert kinds(begin(j, profile=la, now=night_utc))[0] == "RequestDelivery"
    berlin = begin(j, now=night_utc)
    assert berlin.effects == (
        fx.ScheduleTimer(
            berlin.run.id,
            f"journey:{berlin.run.id}/s/1/defer1",
            datetime(2026, 6, 2, 5, 0, tzinfo=UTC),
        ),
    )
    bad_zone = ProfileView("p1", {"tz": "Mars/Olympus"})
    assert kinds(begin(j, profile=bad_zone, now=night_utc)) == ["ScheduleTimer"]


def test_segment_and_system_event_triggers() -> None:
    entered = parse_journey(
        {
            "name": "vip",
            "trigger": {"type": "segment_entered", "segment": "vip"},
            "start": "s",
            "steps": {"s": send()},
        }
    )
    clicked = parse_journey(
        {
            "name": "clicked",
            "trigger": {
                "type": "event",
                "event": "message.clicked",
                "where": [{"property": "journey", "op": "eq", "value": "x"}],
            },
            "start": "s",
            "steps": {"s": send()},
        }
    )

    def starts(j: Journey, event: EventSnapshot) -> bool:
        found = start(j, version=1, profile=PROFILE, trigger=event, existing_runs=[], now=T0)
        return isinstance(found, Run)

    assert starts(entered, EventSnapshot("e", "segment.entered", T0, {"segment": "vip"}))
    assert not starts(entered, EventSnapshot("e", "segment.entered", T0, {"segment": "new"}))
    assert not starts(entered, EventSnapshot("e", "segment.exited", T0, {"segment": "vip"}))
    assert starts(clicked, EventSnapshot("e", "message.clicked", T0, {"journey": "x"}))
    assert not starts(clicked, EventSnapshot("e", "message.clicked", T0, {"journey": "y"}))


def test_nth_occurrence_needs_the_count() -> None:
    j = parse_journey(
        {
            "name": "third",
            "trigger": {"type": "event", "event": "GO", "nth": 3},
            "start": "s",
            "steps": {"s": send()},
        }
    )
    with pytest.raises(ValueError, match="occurrence"):
        start(j, version=1, profile=PROFILE, trigger=go(), existing_runs=[], now=T0)
    for count, started in ((2, False), (3, True), (4, False)):
        found = start(
            j, version=1, profile=PROFILE, trigger=go(), existing_runs=[], now=T0, occurrence=count
        )
        assert isinstance(found, Run) is started


def test_a_run_survives_a_json_round_trip_at_every_stage() -> None:
    j = journey(
        {
            "hello": send(next="w"),
            "w": {
                "type": "wait_for_event",
                "event": "PAID",
                "match": {"o": "o"},
                "timeout": "1d",
                "on_event": "s",
                "on_timeout": "s",
            },
            "s": send("s"),
        },
        goal={"event": "PAID"},
    )
    run = begin(j, trigger=go(o="1")).run
    paid = step(j, run, EventArrived(EventSnapshot("e", "PAID", T0, {"o": "1"}, "p1")), T0 + HOUR)
    for state in (run, paid.run):
        text = json.dumps(state.as_json())
        assert Run.from_json(json.loads(text)) == state


def test_advance_refuses_another_journeys_run_and_naive_times() -> None:
    j = journey({"s": send()})
    run = begin(j).run
    other = journey({"s": send()}, name="other")
    with pytest.raises(ValueError, match="journey"):
        advance(other, run, Start(), profile=PROFILE, now=T0)
    with pytest.raises(ValueError, match="timezone"):
        advance(j, run, Start(), profile=PROFILE, now=datetime(2026, 1, 1))  # noqa: DTZ001


MIXED = journey(
    {
        "hello": send(next="pause"),
        "pause": {"type": "wait", "duration": "1h", "next": "w"},
        "w": {
            "type": "wait_for_event",
            "event": "PAID",
            "timeout": "1d",
            "on_event": "pick",
            "on_timeout": "nudge",
        },
        "pick": {
            "type": "split",
            "branches": [{"name": "a", "percent": 50, "next": "nudge"}],
            "holdout": 50,
        },
        "nudge": send("nudge", channel="email", next="pause"),
    },
    exit=[{"event": "STOP"}],
    goal={"event": "PAID"},
    quiet_hours={"start": "22:00", "end": "06:00"},
    frequency_caps={"limits": [{"channel": "email", "max": 1, "period": "2d"}]},
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["PAID", "STOP", "OTHER", "timer", "stale", "start", "cancel"]),
            st.integers(min_value=0, max_value=30),
        ),
        max_size=25,
    )
)
def test_any_stimulus_applied_twice_acts_once(script: list[tuple[str, int]]) -> None:
    pending = start(MIXED, version=1, profile=PROFILE, trigger=go(), existing_runs=[], now=T0)
    assert isinstance(pending, Run)
    run, now = pending, T0
    sends: list[SentMessage] = []
    seen: set[str] = set()
    for index, (kind, hours) in enumerate([("start", 0), *script]):
        now += timedelta(hours=hours)
        stimulus: Stimulus
        if kind == "start":
            stimulus = Start()
        elif kind == "timer":
            stimulus = TimerFired(run.waiting.timer_key if run.waiting else "none")
        elif kind == "stale":
            stimulus = TimerFired(f"journey:{run.id}/pause/{index}/wait")
        elif kind == "cancel":
            stimulus = Cancel("stopped")
        else:
            stimulus = EventArrived(EventSnapshot(f"e{index}", kind, now, {}, "p1"))
        first = step(MIXED, run, stimulus, now, sent=sends)
        assert step(MIXED, run, stimulus, now, sent=sends) == first
        assert step(MIXED, first.run, stimulus, now, sent=sends).effects == ()
        assert Run.from_json(json.loads(json.dumps(first.run.as_json()))) == first.run
        sends += [
            SentMessage(e.channel, now, "j")
            for e in first.effects
            if isinstance(e, fx.RequestDelivery)
        ]
        keys = [e.idempotency_key for e in first.effects]
        assert len(keys) == len(set(keys)) and not seen & set(keys)  # new work, new keys
        seen |= set(keys)
        run = first.run


def test_send_lookback_is_the_longest_cap_in_force() -> None:
    assert MIXED.send_lookback() == 2 * DAY
    assert MIXED.send_lookback([FrequencyCap("sms", 3, 7 * DAY)]) == 7 * DAY
    assert caps(include_defaults=False).send_lookback([FrequencyCap("sms", 3, 7 * DAY)]) == DAY
    assert journey({"s": send()}).send_lookback() == timedelta()


def test_date_triggers_fire_yearly_or_once_and_29_february_on_the_28th() -> None:
    lisbon = ZoneInfo("Europe/Lisbon")
    yearly = DateTrigger(("birthday",), offset_days=-1)
    leap = {"birthday": "2000-02-29"}
    assert date_moment(yearly, leap, lisbon, after=T0) == datetime(2027, 2, 27, 9, 0, tzinfo=UTC)
    once = DateTrigger(("ends",), repeat="once")
    assert date_moment(once, {"ends": "2026-07-01T00:00:00Z"}, lisbon, after=T0) == datetime(
        2026, 7, 1, 8, 0, tzinfo=UTC
    )
    assert date_moment(once, {"ends": "2026-01-01"}, lisbon, after=T0) is None
    assert date_moment(once, {"ends": "soon"}, lisbon, after=T0) is None


def test_a_schedule_skips_a_wall_time_the_clock_change_skips() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    nightly = parse_cron("30 2 * * *")
    before_spring = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    # 02:30 does not exist in Berlin on 29 March 2026: the next firing is on the 30th.
    assert next_fire(nightly, berlin, after=before_spring) == datetime(
        2026, 3, 30, 0, 30, tzinfo=UTC
    )
    weekdays_or_first = parse_cron("0 8 1 * mon")
    assert next_fire(weekdays_or_first, berlin, after=datetime(2026, 6, 2, tzinfo=UTC)) == (
        datetime(2026, 6, 8, 6, 0, tzinfo=UTC)
    )
