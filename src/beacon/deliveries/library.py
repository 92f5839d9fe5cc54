"""Templates and messages: saved only when they check, read back compiled, and the messages
journeys and inline content send as, made on first use."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from beacon.core import jsonio
from beacon.core.sql import Sql
from beacon.deliveries.templates import CHANNEL_KINDS, ChannelKind, Template, parse_template
from beacon.identity.actions import db_json
from beacon.storage.transaction import Tx

TEMPLATE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
COMPILED_KEPT = 512  # compiled templates kept per process, by content


class LibraryError(ValueError):
    """A template or message that cannot be used as asked; the text says why."""


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What a delivery needs of its message."""

    id: int
    template: str | None
    channel: str
    tag: str | None
    transactional: bool


_compiled: OrderedDict[str, Template] = OrderedDict()


def compiled(content: Mapping[str, Any]) -> Template:
    """Return `content` parsed (`InvalidTemplate` if it does not check), compiled once per
    process for the same content."""
    key = _digest(content)
    found = _compiled.get(key)
    if found is not None:
        _compiled.move_to_end(key)
        return found
    template = parse_template(content)
    _compiled[key] = template
    if len(_compiled) > COMPILED_KEPT:
        _compiled.popitem(last=False)
    return template


async def save_template(
    tx: Tx, *, name: str, content: Mapping[str, Any], description: str | None
) -> int:
    """Create or replace the template `name` if its content checks; return its new version."""
    template = parse_template(content)  # InvalidTemplate names every problem
    rows = await tx.sql.fetch(
        "INSERT INTO message_templates (name, content, version, description, created_at,"
        " updated_at) VALUES (?, ?, 1, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET content = excluded.content,"
        " version = message_templates.version + 1, description = excluded.description,"
        " updated_at = excluded.updated_at RETURNING version",
        name,
        jsonio.dumps_text(template.to_json()),
        description,
        tx.now,
        tx.now,
    )
    return int(rows[0][0])


async def delete_template(tx: Tx, *, name: str) -> bool:
    """Delete the template `name`; messages naming it fail their sends until it is back."""
    return await tx.sql.execute("DELETE FROM message_templates WHERE name = ?", name) > 0


async def load_template(sql: Sql, name: str) -> Template | None:
    """Return the stored template `name`, compiled, or None if there is none."""
    rows = await sql.fetch("SELECT content FROM message_templates WHERE name = ?", name)
    return compiled(db_json(rows[0][0])) if rows else None


async def create_message(
    tx: Tx,
    *,
    template: str,
    channel: ChannelKind,
    name: str | None,
    tag: str | None,
    transactional: bool,
) -> int:
    """Create a message sending `template` on `channel`; return its `messageId`."""
    found = await load_template(tx.sql, template)
    if found is None:
        raise LibraryError(f"there is no template named {template!r}")
    if channel not in found.sources:
        has = ", ".join(found.sources)
        raise LibraryError(f"template {template!r} has no {channel} parts (it has: {has})")
    rows = await tx.sql.fetch(
        "INSERT INTO messages (name, template, channel, tag, transactional, origin, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, NULL, ?, ?) RETURNING id",
        name,
        template,
        channel,
        tag,
        transactional,
        tx.now,
        tx.now,
    )
    return int(rows[0][0])


async def load_message(sql: Sql, message_id: int) -> MessageInfo | None:
    """Return the message `message_id`, or None."""
    rows = await sql.fetch(
        "SELECT id, template, channel, tag, transactional FROM messages WHERE id = ?", message_id
    )
    return _message(rows[0]) if rows else None


async def message_for(
    tx: Tx,
    *,
    requested_by: str,
    template: str | None,
    content: Mapping[str, Any] | None,
    kind: ChannelKind,
) -> MessageInfo:
    """Return the message a request without one sends as, made on first use: one per caller
    (a journey's name is its tag), template or content, and kind."""
    what = template if template is not None else "content:" + _digest(content or {})
    origin = f"{kind}|{requested_by}|{what}"
    if len(origin) > 255:
        origin = "sha256:" + hashlib.sha256(origin.encode()).hexdigest()
    tag = requested_by.removeprefix("journey:") if requested_by.startswith("journey:") else None
    await tx.sql.execute(
        "INSERT INTO messages (name, template, channel, tag, transactional, origin, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (origin) DO NOTHING",
        None,
        template,
        kind,
        tag,
        False,
        origin,
        tx.now,
        tx.now,
    )
    rows = await tx.sql.fetch(
        "SELECT id, template, channel, tag, transactional FROM messages WHERE origin = ?", origin
    )
    return _message(rows[0])


def template_content(kind: ChannelKind, content: Mapping[str, Any]) -> dict[str, Any]:
    """Return inline content as a template: per channel already, or one channel's parts, or
    a call of a URL (a journey's webhook step: `url`, `method`, `headers`, and its `body`
    rendered already, so kept as it is)."""
    if content and all(key in CHANNEL_KINDS for key in content):
        return dict(content)
    if kind == "webhook" and "url" in content:
        body = content.get("body")
        text = body if isinstance(body, str) else jsonio.dumps_text(body)
        if "endraw" not in text:
            text = "{% raw %}" + text + "{% endraw %}"
        return {"webhook": {"body": text}}
    return {kind: dict(content)}


def _message(row: tuple[Any, ...]) -> MessageInfo:
    return MessageInfo(
        id=int(row[0]),
        template=None if row[1] is None else str(row[1]),
        channel=str(row[2]),
        tag=None if row[3] is None else str(row[3]),
        transactional=bool(row[4]),
    )


def _digest(content: Mapping[str, Any]) -> str:
    # Keys sorted: PostgreSQL's JSONB gives them back in an order of its own.
    text = orjson.dumps(dict(content), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(text).hexdigest()[:32]
