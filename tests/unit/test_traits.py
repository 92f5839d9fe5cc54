"""Trait operations keep JSON types and first-seen times."""

from typing import Any

from beacon.identity.actions import ProfileState, merge_traits
from beacon.identity.traits import TraitOp, apply_trait_ops

T1, T2 = "2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00"


def run(values: dict[str, Any], *ops: TraitOp) -> dict[str, Any]:
    return apply_trait_ops(values, {}, list(ops), T1)[0]


def test_set_and_set_once() -> None:
    assert run({}, TraitOp("set", "plan", "pro")) == {"plan": "pro"}
    assert run({"plan": "free"}, TraitOp("set_once", "plan", "pro")) == {"plan": "free"}
    assert run({}, TraitOp("set_once", "plan", "pro")) == {"plan": "pro"}


def test_increment_adds_numbers_and_skips_what_is_not_a_number() -> None:
    assert run({}, TraitOp("increment", "orders", 1)) == {"orders": 1}
    assert run({"total": 10.5}, TraitOp("increment", "total", 2)) == {"total": 12.5}
    assert run({"orders": "many"}, TraitOp("increment", "orders", 1)) == {"orders": "many"}
    assert run({}, TraitOp("increment", "orders", True)) == {}


def test_append_builds_lists_and_unset_removes() -> None:
    assert run({}, TraitOp("append", "tags", "a")) == {"tags": ["a"]}
    assert run({"tags": ["a"]}, TraitOp("append", "tags", ["b", "c"])) == {"tags": ["a", "b", "c"]}
    assert run({"tags": "a"}, TraitOp("append", "tags", "b")) == {"tags": ["a", "b"]}
    values, times = apply_trait_ops(
        {"x": 1}, {"x": {"first_seen": T1}}, [TraitOp("unset", "x")], T2
    )
    assert values == {} and times == {}


def test_first_seen_is_kept_and_updated_at_moves() -> None:
    _, times = apply_trait_ops({}, {}, [TraitOp("set", "plan", "free")], T1)
    _, times = apply_trait_ops({"plan": "free"}, times, [TraitOp("set", "plan", "pro")], T2)
    assert times == {"plan": {"first_seen": T1, "updated_at": T2}}


def test_a_merge_keeps_the_newer_value_and_the_earliest_first_seen() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 1, 1, tzinfo=UTC)
    old = ProfileState(
        "old",
        at,
        None,
        {"plan": "free", "city": "Lviv"},
        {
            "plan": {"first_seen": T1, "updated_at": T1},
            "city": {"first_seen": T1, "updated_at": T1},
        },
        {},
    )
    new = ProfileState(
        "new", at, None, {"plan": "pro"}, {"plan": {"first_seen": T2, "updated_at": T2}}, {}
    )

    values, times = merge_traits(loser=old, survivor=new)

    assert values == {"plan": "pro", "city": "Lviv"}
    assert times["plan"] == {"first_seen": T1, "updated_at": T2}
