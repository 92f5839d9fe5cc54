"""On PostgreSQL a segment version is built by SQL (`sql_build`); Python is the reference. For
random histories, profiles and rules, the SQL statement selects exactly the profiles the pure
core selects, with the same attribute values (its states read back by the pure core) and a
timer no later than the exact next moment."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beacon.core import jsonio
from beacon.migrations.runner import upgrade_database
from beacon.segments import attribute_state, sql_build
from beacon.segments.attribute_state import Event
from beacon.segments.catalog import segment_rule
from beacon.segments.evaluator import Profile, evaluate, next_change
from beacon.segments.membership import AttributeValues, StatesByName
from beacon.settings import Settings
from beacon.storage.partitions import create_partition_sql, month_start, next_month
from tests.conftest import new_postgres_database

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)
DAY = timedelta(days=1)
TYPES = ["PURCHASE", "VIEW", "VISIT"]

amounts = st.one_of(
    st.integers(-500, 500),
    st.integers(0, 100_000).map(lambda cents: cents / 100),
    st.sampled_from(["120.00", " 7 ", "1e3", "-0.5", "n/a", "", "1,5", "NaN", "1e40", True, None]),
    st.sampled_from([1e-12, 0.0000000005, 0.0000000015, 123456789.123456789, 10**18, 10**17]),
    st.lists(st.integers(0, 3), max_size=2),
)
products = st.sampled_from(["a", "b", "123", 123, 123.0, "123.0", True, None, ["a", "b"], {"x": 1}])


@st.composite
def filters(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(["eq", "ne", "in", "not_in", "contains", "gt", "lte", "exists"]))
    found: dict[str, Any] = {"property": draw(st.sampled_from(["product", "amount", "a.b"]))}
    found["op"] = op
    if op in ("in", "not_in"):
        found["value"] = draw(st.lists(st.sampled_from(["a", "123", 123, True, None]), min_size=1))
    elif op in ("gt", "lte"):
        found["value"] = draw(st.sampled_from([0, 100, 99.5, -1]))
    elif op == "contains":
        found["value"] = draw(st.sampled_from(["a", "2", 1]))
    elif op != "exists":
        found["value"] = draw(st.sampled_from(["a", "123", 123, True, None, 1.5]))
    return found


@st.composite
def leaves(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["event", "attribute", "trait", "consent", "identity"]))
    if kind == "event":
        leaf: dict[str, Any] = {"event": draw(st.sampled_from([TYPES[0], TYPES[:2]]))}
        if draw(st.booleans()):
            leaf["where"] = [draw(filters())]
        if draw(st.booleans()):
            leaf["within_days"] = draw(st.sampled_from([1, 7, 30, 45, 400]))
        if draw(st.booleans()):
            leaf["between"] = [(NOW - 20 * DAY).isoformat(), None]
        choice = draw(st.sampled_from(["none", "did_not", "count"]))
        if choice == "did_not":
            leaf["did_not"] = True
        elif choice == "count":
            op = draw(st.sampled_from(["eq", "ne", "gt", "gte", "lt", "in"]))
            value: Any = [1, 2] if op == "in" else draw(st.integers(0, 3))
            leaf["count"] = {"op": op, "value": value}
        return leaf
    if kind == "attribute":
        name = draw(st.sampled_from(sorted(ATTRIBUTES)))
        if ATTRIBUTES[name]["kind"] in ("first_time", "last_time"):
            op = draw(st.sampled_from(["older_than_days", "within_days", "before", "exists"]))
            if op == "before":
                return {"attribute": name, "op": op, "value": (NOW - 10 * DAY).isoformat()}
            if op == "exists":
                return {"attribute": name, "op": op}
            return {"attribute": name, "op": op, "value": draw(st.sampled_from([0, 3, 30]))}
        op = draw(st.sampled_from(["eq", "ne", "gt", "lte", "in", "exists", "not_exists"]))
        if op in ("exists", "not_exists"):
            return {"attribute": name, "op": op}
        value = [0, 100] if op == "in" else draw(st.sampled_from([0, 1, 100, 99.5, 250]))
        return {"attribute": name, "op": op, "value": value}
    if kind == "trait":
        return {"trait": "plan", "op": "eq", "value": draw(st.sampled_from(["pro", 1, None]))}
    if kind == "consent":
        return {"consent": "email", "granted": draw(st.booleans())}
    return {"identity": "email", "present": draw(st.booleans())}


rules = st.recursive(
    leaves(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda rs: {"all": rs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda rs: {"any": rs}),
        inner.map(lambda r: {"not": r}),
    ),
    max_leaves=4,
)

ATTRIBUTES: dict[str, dict[str, Any]] = {
    "n": {"name": "n", "kind": "count", "event_type": "PURCHASE", "window_days": 30},
    "spent": {"name": "spent", "kind": "sum", "event_type": "PURCHASE", "property": "amount"},
    "avg": {"name": "avg", "kind": "average", "event_type": TYPES[:2], "property": "amount"},
    "low": {"name": "low", "kind": "min", "event_type": "PURCHASE", "property": "amount"},
    "high7": {
        "name": "high7",
        "kind": "max",
        "event_type": "PURCHASE",
        "property": "amount",
        "window_days": 7,
    },
    "avg45": {
        "name": "avg45",
        "kind": "average",
        "event_type": "PURCHASE",
        "property": "amount",
        "window_days": 45,
    },
    "first": {"name": "first", "kind": "first_time", "event_type": "VISIT"},
    "last": {
        "name": "last",
        "kind": "last_time",
        "event_type": "PURCHASE",
        "where": [{"property": "product", "op": "ne", "value": "b"}],
    },
}


@st.composite
def people(draw: st.DrawFn) -> list[dict[str, Any]]:
    found = []
    for p in range(draw(st.integers(1, 4))):
        events = [
            {
                "type": draw(st.sampled_from(TYPES)),
                "at": NOW + timedelta(seconds=draw(st.integers(-50 * 86_400, 86_400))),
                "properties": {
                    "amount": draw(amounts),
                    "product": draw(products),
                    **({"a": {"b": draw(products)}} if draw(st.booleans()) else {}),
                },
            }
            for _ in range(draw(st.integers(0, 8)))
        ]
        found.append(
            {
                "id": f"p{p}",
                "events": events,
                "traits": draw(st.sampled_from([{}, {"plan": "pro"}, {"plan": 1}, {"plan": None}])),
                "consents": draw(
                    st.sampled_from(
                        [{}, {"email": {"granted": True}}, {"email": {"granted": False}}]
                    )
                ),
                "email": draw(st.booleans()),
            }
        )
    return found


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with new_postgres_database("beacon_segments_sql") as url:
        upgrade_database(Settings(database_url=url))
        yield url


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


async def load(conn: asyncpg.Connection, found: list[dict[str, Any]]) -> None:
    await conn.execute("TRUNCATE events, profiles, identities")
    month = month_start(NOW - 60 * DAY)
    while month <= month_start(NOW + 2 * DAY):
        await conn.execute(create_partition_sql(month))
        month = next_month(month)
    await conn.executemany(
        "INSERT INTO profiles (id, created_at, updated_at, traits, trait_times, consents)"
        " VALUES ($1, $2, $2, $3, '{}', $4)",
        [
            (p["id"], NOW, jsonio.dumps_text(p["traits"]), jsonio.dumps_text(p["consents"]))
            for p in found
        ],
    )
    await conn.executemany(
        "INSERT INTO identities (kind, value, profile_id, created_at) VALUES ('email', $1, $1, $2)",
        [(p["id"], NOW) for p in found if p["email"]],
    )
    await conn.executemany(
        "INSERT INTO events (id, occurred_at, received_at, type, source_id, profile_id,"
        " properties, context, valid, imported) VALUES ($1, $2, $3, $4, 'web', $5, $6, '{}',"
        " true, false)",
        [
            (
                f"{p['id']}-e{n:02d}",
                e["at"],
                NOW - 30 * DAY,
                e["type"],
                p["id"],
                jsonio.dumps_text(e["properties"]),
            )
            for p in found
            for n, e in enumerate(p["events"])
        ],
    )


def reference(rule_json: Any, found: list[dict[str, Any]]) -> dict[str, Any]:
    """What the pure core says of each profile: member, values, next change."""
    rule = segment_rule(
        segment_id="s",
        name="s",
        version=1,
        readable=False,
        rule_json=rule_json,
        attributes=list(ATTRIBUTES.values()),
    )
    answers = {}
    for p in found:
        history = [
            Event(f"{p['id']}-e{n:02d}", e["type"], e["at"], e["properties"])
            for n, e in enumerate(p["events"])
        ]
        states = {
            n.key: attribute_state.rebuild(n.definition, history, now=NOW)
            for n in rule.names.values()
        }
        identities = frozenset({"email"} if p["email"] else ())
        view = Profile(
            p["traits"], p["consents"], identities, AttributeValues(rule.names, states, NOW)
        )
        answers[p["id"]] = (
            evaluate(rule.rule, view, now=NOW),
            {
                k: attribute_state.value(n.definition, states[n.key], now=NOW)
                for k, n in rule.names.items()
            },
            next_change(rule.rule, view, StatesByName(rule.names, states), now=NOW),
        )
    return answers


@given(found=people(), rule_json=rules)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_the_sql_build_selects_what_the_pure_core_selects(
    database: str, loop: asyncio.AbstractEventLoop, found: list[dict[str, Any]], rule_json: Any
) -> None:
    rule = segment_rule(
        segment_id="s",
        name="s",
        version=1,
        readable=False,
        rule_json=rule_json,
        attributes=list(ATTRIBUTES.values()),
    )
    assert sql_build.supports(rule)
    statement = sql_build.Statement(
        {n.key: n.definition for n in rule.names.values()},
        rule.rule,
        now=NOW,
        before=NOW - 14 * DAY,
    )

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database)
        try:
            await load(conn, found)
            return await conn.fetch(statement.select(), *statement.c.args)
        finally:
            await conn.close()

    rows = {row["profile_id"]: row for row in loop.run_until_complete(run())}
    expected = reference(rule_json, found)
    assert set(rows) == set(expected)
    for profile_id, (member, values, moment) in expected.items():
        row = rows[profile_id]
        assert row["member"] == member, (profile_id, values)
        for name, named in rule.names.items():
            i = statement.index[named.key]
            raw = row[f"s{i}"]
            state = {} if raw is None else jsonio.loads(raw)
            assert attribute_state.value(named.definition, state, now=NOW) == values[name], name
        if moment is not None:
            assert row["next_look"] is not None and row["next_look"] <= moment


def test_rows_a_consumer_inserted_meanwhile_turn_the_build_insert_into_an_upsert(
    database: str, loop: asyncio.AbstractEventLoop
) -> None:
    """The build deletes its rows, then inserts them plainly (fast); a row the consumer
    inserted between the two makes that insert fail, and the upsert then runs in its place
    without losing the transaction."""
    insert = (
        "INSERT INTO attribute_states (profile_id, key, state, value, updated_at)"
        " SELECT p, 'build-key', jsonb_build_object('tally', p), NULL, $1::timestamptz"
        " FROM unnest(ARRAY['p1', 'p2', 'p3']) AS p"
    )
    upsert = " ON CONFLICT (profile_id, key) DO UPDATE SET state = excluded.state"

    async def run() -> list[tuple[str, Any]]:
        conn = await asyncpg.connect(database)
        try:
            await conn.execute("DELETE FROM attribute_states WHERE key = 'build-key'")
            async with conn.transaction():
                await conn.execute(  # the consumer's, committed meanwhile
                    "INSERT INTO attribute_states (profile_id, key, state, value, updated_at)"
                    " VALUES ('p2', 'build-key', '{\"tally\": \"older\"}', NULL, $1)",
                    NOW,
                )
                await sql_build._insert(conn, insert, upsert, NOW)
                await conn.execute("SELECT 1")  # the transaction still works
            rows = await conn.fetch(
                "SELECT profile_id, state FROM attribute_states WHERE key = 'build-key'"
                " ORDER BY profile_id"
            )
            return [(row["profile_id"], jsonio.loads(row["state"])) for row in rows]
        finally:
            await conn.close()

    assert loop.run_until_complete(run()) == [
        ("p1", {"tally": "p1"}),
        ("p2", {"tally": "p2"}),
        ("p3", {"tally": "p3"}),
    ]
