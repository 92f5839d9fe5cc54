"""Event types: the only write path for them, and validating events against their schemas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beacon.core.cache import RefreshingMap
from beacon.core.clock import Clock
from beacon.core.jsonio import dumps_text
from beacon.events.models import EventType
from beacon.events.schemas import EventTypeIn
from beacon.storage.transaction import Tx

LOCAL_BASE = "urn:beacon:event-type"


class InvalidSchema(ValueError):
    """The JSON Schema given for an event type is not a valid schema."""


@dataclass(frozen=True, slots=True)
class CompiledEventType:
    name: str
    mode: str
    validator: Draft202012Validator

    def check(self, properties: dict[str, Any]) -> list[dict[str, Any]]:
        """Return every way `properties` fails the schema, each with its path; empty if valid."""
        errors = sorted(self.validator.iter_errors(properties), key=lambda e: list(e.path))
        return [
            {
                "loc": ["properties", *error.path],
                "path": ".".join(["properties", *(str(p) for p in error.path)]),
                "message": error.message,
                "rule": str(error.validator),
            }
            for error in errors
        ]


def compile_event_type(name: str, mode: str, schema: dict[str, Any]) -> CompiledEventType:
    """Check `schema` and build its validator.

    References must resolve inside the schema itself: Beacon never fetches a remote `$ref`
    (the registry has no retriever), so one that does not resolve locally is refused here.
    """
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidSchema(f"invalid JSON Schema for {name!r}: {exc.message}") from exc
    resource = DRAFT202012.create_resource(schema)
    base = resource.id() or LOCAL_BASE
    resolver = Registry().with_resource(base, resource).resolver(base_uri=base)
    for ref in _references(schema):
        try:
            resolver.lookup(ref)
        except Unresolvable as exc:
            raise InvalidSchema(
                f"invalid JSON Schema for {name!r}: $ref {ref!r} does not resolve within the"
                " schema (remote references are not fetched)"
            ) from exc
    validator = Draft202012Validator(schema, registry=Registry().with_resource(base, resource))
    return CompiledEventType(name=name, mode=mode, validator=validator)


def _references(schema: Any) -> list[str]:
    if isinstance(schema, dict):
        found = [
            v for k, v in schema.items() if k in ("$ref", "$dynamicRef") and isinstance(v, str)
        ]
        for key, value in schema.items():
            if key not in ("const", "enum", "examples", "default"):
                found += _references(value)
        return found
    if isinstance(schema, list):
        return [ref for item in schema for ref in _references(item)]
    return []


async def put_event_type(tx: Tx, *, name: str, data: EventTypeIn) -> None:
    """Create or replace the event type `name` (its creation time stays)."""
    compile_event_type(name, data.mode, data.schema_)
    await tx.sql.execute(
        "INSERT INTO event_types (name, description, schema, mode, retention_days, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET description = excluded.description,"
        " schema = excluded.schema, mode = excluded.mode,"
        " retention_days = excluded.retention_days, updated_at = excluded.updated_at",
        name,
        data.description,
        dumps_text(data.schema_),
        data.mode,
        data.retention_days,
        tx.now,
        tx.now,
    )


async def list_event_types(*, session: AsyncSession) -> list[EventType]:
    return list((await session.scalars(select(EventType).order_by(EventType.name))).all())


async def get_event_type(*, session: AsyncSession, name: str) -> EventType | None:
    return await session.get(EventType, name)


async def delete_event_type(tx: Tx, *, name: str) -> bool:
    """Forget a type's schema; its events stay in the history. False if it was not registered."""
    return await tx.sql.execute("DELETE FROM event_types WHERE name = ?", name) > 0


class EventTypeCatalog(RefreshingMap[str, CompiledEventType]):
    """Every registered type with its compiled validator, reloaded every few seconds."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, ttl: float, clock: Clock):
        async def load() -> dict[str, CompiledEventType]:
            async with sessions() as session:
                rows = await list_event_types(session=session)
            return {t.name: compile_event_type(t.name, t.mode, t.schema) for t in rows}

        super().__init__(load, ttl=ttl, clock=clock)
