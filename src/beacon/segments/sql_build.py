"""PostgreSQL: a segment version built by SQL over `events` instead of profile by profile.

One statement reads the counted events of the types the version needs (`states.history`'s
rule: counted by the consumer, or received before the keys' retention), aggregates them per
profile for each definition (count, sum, average, min, max, first and last time, rolling
windows by bucket), evaluates the rule over those values and the profiles' traits, consents
and identities, and keeps the result in a temporary table; in the same transaction the states,
the version's member rows and the profiles' timers are written from it. Python stays the
reference (`sql_rules`), and a test builds the same versions both ways.

The statement sees the database as it was when it started: profiles whose events the consumer
counted since then (`touched`) are built again by the Python path, under their locks,
afterwards, so none keeps a state the statement overwrote with an older one. Profiles erased
or merged meanwhile lose what it wrote for them before it commits. A profile's timer is
brought forward to the first moment a rolling window lets an event go or a relative time
comparison turns (an early bound: the timer then finds the exact next moment itself).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from beacon.core.clock import SystemClock
from beacon.core.sql import chunks
from beacon.segments import recompute
from beacon.segments.attributes import AttributeDefinition
from beacon.segments.catalog import SegmentRule
from beacon.segments.comparisons import RELATIVE
from beacon.segments.rules import (
    AllOf,
    AnyOf,
    AttributeCondition,
    ConsentCondition,
    EventCondition,
    IdentityCondition,
    Not,
    Rule,
    TraitCondition,
    conditions,
)
from beacon.segments.schedule import KIND, PREFIX
from beacon.segments.sql_rules import (
    Compiler,
    bucket,
    condition_supported,
    iso,
    leaves,
    supported,
)
from beacon.segments.states import ALL_STORED, CONSUMER, counted_before, expand_passed
from beacon.segments.values import minute_of
from beacon.storage.transaction import Tx
from beacon.storage.writer import Writer

log = structlog.get_logger()
BULK_LEASE = timedelta(minutes=30)
TOUCH_MARGIN = timedelta(minutes=10)  # longer than any consumer transaction lasts
REDO_BATCH = 500
TALLY = {"count": "c", "sum": "s", "average": "s", "min": "m", "max": "m"}


def supports(rule: SegmentRule) -> bool:
    """Whether SQL can build this version (else the Python path does)."""
    return all(supported(n.definition) for n in rule.names.values()) and condition_supported(
        rule.rule
    )


class Statement:
    """The SELECT building a version: one row per profile (see the module docstring)."""

    def __init__(
        self,
        definitions: Mapping[str, AttributeDefinition],
        rule: Rule,
        *,
        now: datetime,
        before: datetime,
    ) -> None:
        self.c = Compiler()
        self.keys = sorted(definitions)
        self.definitions = definitions
        self.index = {key: i for i, key in enumerate(self.keys)}
        self.rule = rule
        self._times = {"now": now, "now_minute": minute_of(now), "before": before}
        self._marks: dict[str, str] = {}

    def _mark(self, name: str, cast: str) -> str:
        """A parameter added the first time it is used (an unused one has no type)."""
        if name not in self._marks:
            self._marks[name] = self.c.arg(self._times[name], cast)
        return self._marks[name]

    @property
    def now(self) -> str:
        return self._mark("now", "::timestamptz")

    @property
    def now_minute(self) -> str:
        return self._mark("now_minute", "::bigint")

    @property
    def before(self) -> str:
        return self._mark("before", "::timestamptz")

    def _events(self) -> str:
        columns = ["e.profile_id", "e.occurred_at"]
        amounts: dict[tuple[str, ...], int] = {}
        joins = []
        for key in self.keys:
            d, i = self.definitions[key], self.index[key]
            where = [f"e.type = ANY({self.c.arg(list(d.event_types), '::text[]')})"]
            if d.between is not None:
                start, stop = d.between
                if start is not None:
                    where.append(f"e.occurred_at >= {self.c.arg(start, '::timestamptz')}")
                if stop is not None:
                    where.append(f"e.occurred_at < {self.c.arg(stop, '::timestamptz')}")
            where += self.c.filters(d.where)
            if d.window_days is not None:
                where.append(f"{bucket(d)} + {leaves(d)} > {self.now_minute}")
                columns.append(f"{bucket(d)} AS b{i}")
            if d.property_path is not None:
                if d.property_path not in amounts:
                    j = amounts[d.property_path] = len(amounts)
                    joins.append(self._amount(j, d.property_path))
                amount = f"x{amounts[d.property_path]}.a"
                columns.append(f"{amount} AS a{i}")
                where.append(f"{amount} IS NOT NULL")
            columns.append(f"({' AND '.join(where)}) AS f{i}")
        types = sorted({t for d in self.definitions.values() for t in d.event_types})
        return (
            f"SELECT {', '.join(columns)} FROM events e{''.join(joins)}"
            " WHERE e.profile_id IS NOT NULL"
            f" AND e.type = ANY({self.c.arg(types, '::text[]')})"
            f" AND (e.received_at < {self.before} OR EXISTS (SELECT 1 FROM processed_messages pm"
            f" WHERE pm.consumer = {self.c.arg(CONSUMER, '::text')} AND pm.key = e.id))"
        )

    def _amount(self, j: int, path: tuple[str, ...]) -> str:
        """A property's amount, read once per event (`OFFSET 0` keeps each step from being
        inlined, and so evaluated again, where it is used)."""
        value = f"SELECT {self.c.path('e.properties', path)} AS v OFFSET 0"
        number = f"SELECT {self.c.number('vv.v')} AS n FROM ({value}) vv OFFSET 0"
        amount = f"SELECT {self.c.rounded('nn.n')} AS a FROM ({number}) nn OFFSET 0"
        return f" LEFT JOIN LATERAL ({amount}) x{j} ON true"

    def _aggregates(self) -> str:
        columns = ["profile_id"]
        for key in self.keys:
            d, i = self.definitions[key], self.index[key]
            f = f"FILTER (WHERE f{i})"
            if d.kind == "count":
                columns.append(f"count(*) {f} AS c{i}")
            elif d.kind in ("sum", "average"):
                columns += [f"sum(a{i}) {f} AS s{i}", f"count(a{i}) {f} AS n{i}"]
            elif d.kind in ("min", "max"):
                columns.append(f"{d.kind}(a{i}) {f} AS m{i}")
            else:
                pick = "min" if d.kind == "first_time" else "max"
                columns.append(f"{pick}(occurred_at) {f} AS t{i}")
            if d.window_days is not None:
                columns.append(f"min(b{i}) {f} AS lb{i}")
        return f"SELECT {', '.join(columns)} FROM ev GROUP BY profile_id"

    def _buckets(self, i: int, d: AttributeDefinition) -> str:
        tally = {
            "count": "n",
            "sum": "trim_scale(s)::text",
            "average": "n, trim_scale(s)::text",
            "min": "trim_scale(lo)::text",
            "max": "trim_scale(hi)::text",
        }[d.kind]
        amount = "NULL::numeric" if d.property_path is None else f"a{i}"
        return (
            f"SELECT profile_id, jsonb_agg(jsonb_build_array(b, {tally}) ORDER BY b) AS buckets"
            f" FROM (SELECT profile_id, b{i} AS b, count(*) AS n, sum({amount}) AS s,"
            f" min({amount}) AS lo, max({amount}) AS hi FROM ev WHERE f{i} GROUP BY 1, 2) x"
            " GROUP BY profile_id"
        )

    def value(self, key: str) -> str:
        """A definition's value as SQL: a number (NULL: none) or a time."""
        d, i = self.definitions[key], self.index[key]
        if d.kind == "count":
            return f"COALESCE(a.c{i}, 0)"
        if d.kind == "sum":
            return f"COALESCE(a.s{i}, 0)"
        if d.kind == "average":
            return f"(a.s{i} / NULLIF(a.n{i}, 0))"
        if d.kind in ("min", "max"):
            return f"a.m{i}"
        return f"a.t{i}"

    def state(self, key: str) -> str:
        """A definition's state as `attribute_state` writes it (NULL: nothing counted)."""
        d, i = self.definitions[key], self.index[key]
        if d.window_days is not None:
            return (
                f"CASE WHEN w{i}.buckets IS NOT NULL THEN jsonb_build_object('horizon',"
                f" {self.now_minute}, 'buckets', w{i}.buckets) END"
            )
        if d.kind == "count":
            tally = f"jsonb_build_object('tally', jsonb_build_array(a.c{i}))"
            return f"CASE WHEN a.c{i} > 0 THEN {tally} END"
        if d.kind in ("sum", "average"):
            tally = f"trim_scale(a.s{i})::text"
            if d.kind == "average":
                tally = f"a.n{i}, {tally}"
            found = f"jsonb_build_object('tally', jsonb_build_array({tally}))"
            return f"CASE WHEN a.n{i} > 0 THEN {found} END"
        if d.kind in ("min", "max"):
            return (
                f"CASE WHEN a.m{i} IS NOT NULL THEN jsonb_build_object('tally',"
                f" jsonb_build_array(trim_scale(a.m{i})::text)) END"
            )
        field = "first" if d.kind == "first_time" else "last"
        return (
            f"CASE WHEN a.t{i} IS NOT NULL THEN jsonb_build_object('{field}', {iso(f'a.t{i}')}) END"
        )

    def shown(self, key: str) -> str:
        """A definition's value as JSON (the `value` column)."""
        d = self.definitions[key]
        if d.kind in ("first_time", "last_time"):
            return f"to_jsonb({iso(self.value(key))})"
        if d.kind == "average":
            return f"to_jsonb(({self.value(key)})::float8)"
        return f"to_jsonb(trim_scale({self.value(key)}))"

    def holds(self, rule: Rule) -> str:
        if isinstance(rule, AllOf | AnyOf):
            joint = " AND " if isinstance(rule, AllOf) else " OR "
            return "(" + joint.join(self.holds(r) for r in rule.rules) + ")"
        if isinstance(rule, Not):
            return f"(NOT {self.holds(rule.rule)})"
        if isinstance(rule, EventCondition):
            return self.c.numeric(self.value(rule.attribute.fingerprint), rule.count)
        if isinstance(rule, AttributeCondition):
            value = self.value(rule.attribute.fingerprint)
            if rule.attribute.kind in ("first_time", "last_time"):
                relative = rule.comparison.op in RELATIVE
                return self.c.moment(value, rule.comparison, self.now if relative else "")
            return self.c.numeric(value, rule.comparison)
        if isinstance(rule, TraitCondition):
            return self.c.matches(self.c.path("p.traits", rule.path), rule.comparison)
        if isinstance(rule, ConsentCondition):
            decision = self.c.arg(rule.channel, "::text")
            granted = self.c.arg("true" if rule.granted else "false", "::jsonb")
            return (
                f"COALESCE(jsonb_typeof(p.consents -> {decision}) = 'object'"
                f" AND (p.consents -> {decision} -> 'granted') = {granted}, false)"
            )
        assert isinstance(rule, IdentityCondition)
        found = (
            "EXISTS (SELECT 1 FROM identities i WHERE i.profile_id = p.id"
            f" AND i.kind = {self.c.arg(rule.kind, '::text')})"
        )
        return found if rule.present else f"(NOT {found})"

    def next_look(self) -> str:
        """The earliest moment time alone may change the rule's result (NULL: never)."""
        moments = []
        for leaf in conditions(self.rule):
            if not isinstance(leaf, AttributeCondition | EventCondition):
                continue
            key, d = leaf.attribute.fingerprint, leaf.attribute
            i = self.index[key]
            if d.window_days is not None:
                moments.append(f"to_timestamp((a.lb{i} + {leaves(d)}) * 60)")
            elif isinstance(leaf, AttributeCondition) and leaf.comparison.op in RELATIVE:
                turn = self.c.turn(self.value(key), leaf.comparison, self.now)
                if turn is not None:
                    moments.append(turn)
        return f"LEAST({', '.join(moments)})" if moments else "NULL::timestamptz"

    def select(self) -> str:
        """The SELECT, its columns: profile_id, s{i} (state), v{i} (value), member, next_look."""
        windows = [
            (self.index[k], d) for k, d in self.definitions.items() if d.window_days is not None
        ]
        ctes = [f"ev AS ({self._events()})", f"agg AS ({self._aggregates()})"]
        ctes += [f"w{i} AS ({self._buckets(i, d)})" for i, d in windows]
        joins = "".join(f" LEFT JOIN w{i} ON w{i}.profile_id = p.id" for i, _ in windows)
        columns = ["p.id AS profile_id"]
        for key in self.keys:
            i = self.index[key]
            columns += [f"{self.state(key)} AS s{i}", f"{self.shown(key)} AS v{i}"]
        columns += [f"{self.holds(self.rule)} AS member", f"{self.next_look()} AS next_look"]
        return (
            f"WITH {', '.join(ctes)} SELECT {', '.join(columns)} FROM profiles p"
            f" LEFT JOIN agg a ON a.profile_id = p.id{joins} WHERE p.merged_into IS NULL"
        )


async def build(
    writer: Writer,
    build: recompute.SegmentBuild,
    *,
    keep_days: int,
    progress: recompute.Progress | None,
) -> None:
    """Build a claimed version by SQL, then the profiles touched meanwhile by Python."""
    database = writer.database
    pool = getattr(database, "pool")  # noqa: B009 - a PostgresDatabase's asyncpg pool
    real = SystemClock()
    now = database.clock.now()
    definitions = {n.key: n.definition for n in build.rule.names.values()}
    statement = Statement(
        definitions, build.rule.rule, now=now, before=counted_before(now, keep_days)
    )
    select = statement.select()
    await writer.run(expand_passed)
    async with pool.acquire() as conn, conn.transaction():
        held = await conn.execute(
            "UPDATE segments SET run_until = $1 WHERE id = $2 AND run_owner = $3 AND version = $4",
            real.now() + BULK_LEASE,
            build.segment_id,
            build.owner,
            build.version,
        )
        if held.endswith(" 0"):
            raise recompute.LeaseLost(f"segment {build.name!r} version {build.version}")
        await conn.execute("SET LOCAL work_mem = '256MB'")
        await conn.execute("SET LOCAL jit = off")  # compiling costs seconds, saves none here
        started = time.perf_counter()
        await conn.execute(
            f"CREATE TEMP TABLE segment_build ON COMMIT DROP AS {select}", *statement.c.args
        )
        built = time.perf_counter()
        await _write(conn, build, statement, now)
        written = time.perf_counter()
    if progress is not None:
        progress(1, 2)
    await writer.run(expand_passed)  # events passed meanwhile were dated when passed
    touched = await database.read(
        "SELECT DISTINCT e.profile_id FROM processed_messages pm JOIN events e ON e.id = pm.key"
        " WHERE pm.consumer = ? AND pm.processed_at >= ? AND e.profile_id IS NOT NULL",
        CONSUMER,
        now - TOUCH_MARGIN,
    )
    log.info(
        "segment_sql_build",
        segment=build.name,
        version=build.version,
        statement_s=round(built - started, 2),
        write_s=round(written - built, 2),
        touched=len(touched),
    )
    for batch in chunks(sorted(str(row[0]) for row in touched), REDO_BATCH):

        async def redo(tx: Tx, batch: list[str] = batch) -> None:
            await recompute.renew(tx, build, real_now=real.now(), done=0)
            await recompute.rebuild_profiles(
                tx, batch, definitions, rule=build.rule, keep_days=keep_days
            )

        await writer.run(redo)
    if progress is not None:
        progress(2, 2)


async def preview(
    database: Any, rule: SegmentRule, *, now: datetime, sample: int
) -> tuple[int, list[str]]:
    """How many profiles the version selects now from their whole stored history, and some."""
    definitions = {n.key: n.definition for n in rule.names.values()}
    statement = Statement(definitions, rule.rule, now=now, before=ALL_STORED)
    limit = statement.c.arg(sample, "::int")
    async with database.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL jit = off")
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE member),"
            f" (array_agg(profile_id ORDER BY profile_id) FILTER (WHERE member))[1:{limit}]"
            f" FROM ({statement.select()}) AS built",
            *statement.c.args,
        )
    return int(row[0]), list(row[1] or [])


async def _write(
    conn: Any, build: recompute.SegmentBuild, statement: Statement, now: datetime
) -> None:
    for key in statement.keys:
        i = statement.index[key]
        await conn.execute(
            "DELETE FROM attribute_states a USING segment_build b WHERE a.key = $1::text"
            " AND a.profile_id = b.profile_id",
            key,
        )
        await _insert(
            conn,
            "INSERT INTO attribute_states (profile_id, key, state, value, updated_at)"
            f" SELECT profile_id, $1::text, s{i}, v{i}, $2::timestamptz FROM segment_build"
            f" WHERE s{i} IS NOT NULL",
            " ON CONFLICT (profile_id, key) DO UPDATE SET state = excluded.state,"
            " value = excluded.value, updated_at = excluded.updated_at",
            key,
            now,
        )
    await conn.execute(
        "DELETE FROM segment_members m USING segment_build b WHERE m.segment_id = $1"
        " AND m.version = $2 AND m.profile_id = b.profile_id",
        build.segment_id,
        build.version,
    )
    await _insert(
        conn,
        "INSERT INTO segment_members (segment_id, version, profile_id, since)"
        " SELECT $1::text, $2::int, profile_id, $3::timestamptz FROM segment_build WHERE member",
        " ON CONFLICT (segment_id, version, profile_id) DO NOTHING",
        build.segment_id,
        build.version,
        now,
    )
    # Profiles erased or merged while the statement ran keep nothing it wrote (one erased
    # later is forgotten by the consumer, on its profile.erased).
    await conn.execute(
        "CREATE TEMP TABLE segment_gone ON COMMIT DROP AS SELECT b.profile_id FROM segment_build b"
        " WHERE NOT EXISTS (SELECT 1 FROM profiles p WHERE p.id = b.profile_id"
        " AND p.merged_into IS NULL)"
    )
    gone = "profile_id IN (SELECT profile_id FROM segment_gone)"
    await conn.execute(
        f"DELETE FROM segment_members WHERE segment_id = $1 AND version = $2 AND {gone}",
        build.segment_id,
        build.version,
    )
    await conn.execute(
        f"DELETE FROM attribute_states WHERE key = ANY($1::text[]) AND {gone}", statement.keys
    )
    await conn.execute(
        "INSERT INTO timers (key, kind, run_at, payload, attempts, created_at)"
        " SELECT $1::text || profile_id, $2::text, next_look, '{}', 0, $3::timestamptz"
        " FROM segment_build"
        " WHERE next_look IS NOT NULL ON CONFLICT (key) DO UPDATE SET run_at = excluded.run_at"
        " WHERE excluded.run_at < timers.run_at",
        PREFIX,
        KIND,
        now,
    )


async def _insert(conn: Any, insert: str, on_conflict: str, *args: Any) -> None:
    """Run `insert`, whose rows were deleted first: a plain insert writes twice as fast as an
    upsert. A consumer inserting one of them meanwhile makes it fail; it is then undone (a
    savepoint) and run again with `on_conflict`."""
    try:
        async with conn.transaction():
            await conn.execute(insert, *args)
    except asyncpg.UniqueViolationError:
        log.info("segment_sql_build_conflict", table=insert.split()[2])
        await conn.execute(insert + on_conflict, *args)
