"""Choosing each request's profile and session, without I/O."""

from collections.abc import Callable
from datetime import UTC, datetime
from itertools import count
from typing import Any

from beacon.ingest.commands import NewEvent, TrackCommand
from beacon.ingest.plan import IdentityLookups, first_keys, plan_events, plan_identities

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)


def ids() -> Callable[[], str]:
    counter = count(1)
    return lambda: f"new-{next(counter)}"


def command(**kwargs: Any) -> TrackCommand:
    values: dict[str, Any] = {"source_id": "web", "received_at": NOW, "events": []}
    values.update(kwargs)
    return TrackCommand(**values)


def event(event_id: str, external_id: str | None = None) -> NewEvent:
    return NewEvent(
        id=event_id, type="t", occurred_at=NOW, properties={}, context={}, external_id=external_id
    )


def test_known_profile_is_kept_unknown_is_replaced_and_missing_is_created() -> None:
    commands = [
        command(profile_id="known", session_id="s1"),
        command(profile_id="stranger", session_id="s2"),
        command(session_id="s3"),
    ]
    plan = plan_identities(commands, IdentityLookups({"known": "known"}, {}), ids())
    assert plan.profile_ids == ["known", "new-1", "new-2"]
    assert plan.profile_created == [False, True, True]
    assert [p for p, _ in plan.new_profiles] == ["new-1", "new-2"]
    assert [(s.id, s.profile_id) for s in plan.new_sessions] == [
        ("s1", "known"),
        ("s2", "new-1"),
        ("s3", "new-2"),
    ]


def test_session_profile_is_used_when_the_client_lost_its_profile_id() -> None:
    plan = plan_identities([command(session_id="s1")], IdentityLookups({}, {"s1": "p1"}), ids())
    assert plan.profile_ids == ["p1"]
    assert plan.new_profiles == []
    assert plan.session_created == [False]


def test_requests_of_one_new_visitor_in_one_batch_share_one_profile() -> None:
    commands = [command(session_id="s1"), command(session_id="s1")]
    plan = plan_identities(commands, IdentityLookups({}, {}), ids())
    assert plan.profile_ids == ["new-1", "new-1"]
    assert plan.session_created == [True, False]


def test_the_same_unknown_claimed_id_maps_to_one_new_profile() -> None:
    commands = [
        command(profile_id="gone", session_id="a"),
        command(profile_id="gone", session_id="b"),
    ]
    plan = plan_identities(commands, IdentityLookups({}, {}), ids())
    assert plan.profile_ids == ["new-1", "new-1"]


def test_profile_less_and_unsaved_sessions() -> None:
    commands = [
        command(session_id="s1", resolve_profile=False),
        command(session_id="s2", save_session=False),
    ]
    plan = plan_identities(commands, IdentityLookups({}, {}), ids())
    assert plan.profile_ids == [None, "new-1"]
    assert [s.id for s in plan.new_sessions] == ["s1"]
    assert plan.new_sessions[0].profile_id is None


def test_client_ids_are_deduplicated_within_and_across_batches() -> None:
    commands = [
        command(session_id="s", events=[event("e1", "x"), event("e2", "x"), event("e3")]),
        command(session_id="s", events=[event("e4", "y")]),
    ]
    keys = first_keys(commands)
    assert [(k[1], k[2]) for k in keys] == [("x", "e1"), ("y", "e4")]
    identities = plan_identities(commands, IdentityLookups({}, {}), ids())
    # "y" was stored by an earlier request: only e1 (first "x") and e3 (no client id) are new.
    plan = plan_events(commands, identities, fresh_event_ids={"e1"})
    assert [r.event.id for r in plan.rows] == ["e1", "e3"]
    assert [m.id for m in plan.messages] == ["e1", "e3"]
    assert plan.outcomes[0].duplicate_external_ids == ["x"]
    assert plan.outcomes[1].duplicate_external_ids == ["y"]


def test_unsaved_events_are_still_published() -> None:
    commands = [command(session_id="s", save_events=False, events=[event("e1")])]
    identities = plan_identities(commands, IdentityLookups({}, {}), ids())
    plan = plan_events(commands, identities, fresh_event_ids=set())
    assert plan.rows == []
    assert [(m.id, m.stored) for m in plan.messages] == [("e1", False)]
    assert plan.outcomes[0].stored_event_ids == []
    assert plan.outcomes[0].published_event_ids == ["e1"]


def test_a_profile_less_session_is_linked_to_the_profile_a_later_request_gets() -> None:
    commands = [command(session_id="s1", resolve_profile=False), command(session_id="s1")]
    plan = plan_identities(commands, IdentityLookups({}, {}), ids())
    assert plan.profile_ids == [None, "new-1"]
    assert plan.session_links == {"s1": "new-1"}
    later = plan_identities([command(session_id="s1")], IdentityLookups({}, {"s1": "new-1"}), ids())
    assert later.profile_ids == ["new-1"]
    assert later.session_links == {}
