"""Template variables in a journey's texts: which exist, and filling them in.

Texts (message content, a send's extra context, webhook URLs, headers and bodies, emitted
properties, trait values) may hold `{{ variable }}`; message content may add Jinja filters
(`{{ profile.traits.name | default("there") }}`), which messaging applies. Variables (the
roots and fields of messaging's templates):

- `profile.id`, `profile.traits.PATH`, `profile.attributes.NAME`, `profile.identities.KIND`;
- `event.id`, `event.type`, `event.time`, `event.properties.PATH`: the event that started
  the run; when its type has a registered JSON Schema, PATH's names must be declared there
  (where the schema declares properties);
- `context.STEP...`: the event that ended the wait-for-event step STEP (same fields as
  `event`); `context.NAME...`: a value of the send step's own `context`;
- `message.*` (message content only): what messaging adds (unsubscribe_url, ...).

The engine fills in everything but message content, which goes to messaging unrendered with
the variables (`render` here: a text that is one variable alone keeps the value's JSON type;
filters are not applied here, so only message content may use them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from beacon.core import jsonio
from beacon.core.jsonio import Path
from beacon.segments.values import lookup

_VARIABLE = re.compile(r"\{\{\s*([^|}]*?)\s*(?:\|[^}]*)?\}\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")
EVENT_FIELDS = ("id", "type", "time", "properties")
PROFILE_MAPS = ("traits", "attributes", "identities")
MESSAGE_FIELDS = ("id", "delivery_id", "tag", "view_online_url", "unsubscribe_url")
Schema = Mapping[str, Any]


def variables(text: str) -> list[str]:
    """Return the variables `text` uses, in order (malformed ones as written)."""
    return [match.group(1) for match in _VARIABLE.finditer(text)]


def filtered(text: str) -> bool:
    """Whether a variable in `text` has a filter (`{{ x | default("y") }}`)."""
    return any(match.group(0).count("|") for match in _VARIABLE.finditer(text))


def strings(value: Any, at: Path) -> Iterator[tuple[Path, str]]:
    """Yield every text inside a JSON value with its path (keys are not templated)."""
    if isinstance(value, str):
        yield at, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from strings(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, (*at, index))


def variable_problem(
    name: str,
    *,
    trigger_schema: Schema | None,
    context: Mapping[str, Schema | None],
    message: bool = False,
) -> str | None:
    """Say why variable `name` cannot exist, or None when it can.

    `context` maps each name `context.NAME` may start with to the JSON Schema of what it holds
    (an event type's, for a wait's event), or None when anything may be under it; `message`:
    whether messaging's `message.*` exists here (message content).
    """
    if not _NAME.fullmatch(name):
        return f"{name!r} is not a variable (a dotted name such as profile.traits.first_name)"
    root, *rest = name.split(".")
    if root == "profile":
        if rest == ["id"] or (rest[:1] and rest[0] in PROFILE_MAPS and len(rest) > 1):
            return None
        return f"{name}: a profile has id, traits.NAME, attributes.NAME and identities.KIND"
    if root == "event":
        return _event_problem(name, rest, trigger_schema)
    if root == "context":
        if not rest:
            return "context needs a name: context.STEP (a wait's event) or a send's context key"
        if rest[0] not in context:
            known = ", ".join(sorted(context)) or "none here"
            return f"{name}: no context {rest[0]!r} (known: {known})"
        schema = context[rest[0]]
        return None if schema is None else _event_problem(name, rest[1:], schema)
    if root == "message" and message:
        if len(rest) == 1 and rest[0] in MESSAGE_FIELDS:
            return None
        return f"{name}: a message has {', '.join(MESSAGE_FIELDS)}"
    roots = "profile, event, context or message" if message else "profile, event or context"
    return f"{name}: variables start with {roots}"


def _event_problem(name: str, rest: list[str], schema: Schema | None) -> str | None:
    if not rest or rest[0] not in EVENT_FIELDS or (rest[0] == "properties") != (len(rest) > 1):
        return f"{name}: an event has id, type, time and properties.NAME"
    if len(rest) == 1 or schema is None:
        return None
    missing = missing_property(schema, rest[1:])
    return None if missing is None else f"{name}: the event type's schema has no {missing!r}"


def missing_property(schema: Schema, path: list[str]) -> str | None:
    """Return the first name of `path` a JSON Schema declares no property for, else None.

    Where a (sub)schema declares no properties at all and allows others, anything may be there.
    """
    node: Any = schema
    for depth, part in enumerate(path):
        declared = _declared(schema, node)
        if declared is None:
            return None
        if part not in declared:
            return ".".join(path[: depth + 1])
        node = declared[part]
    return None


def _declared(root: Schema, node: Any) -> dict[str, Any] | None:
    """The properties a (sub)schema declares, through local $ref and allOf/anyOf/oneOf."""
    found: dict[str, Any] = {}
    closed = False
    stack, seen = [node], 0
    while stack and seen < 100:
        seen += 1
        current = _resolve(root, stack.pop())
        if not isinstance(current, Mapping):
            continue
        if isinstance(current.get("properties"), Mapping):
            found.update(current["properties"])
        closed = closed or current.get("additionalProperties") is False
        for key in ("allOf", "anyOf", "oneOf"):
            if isinstance(current.get(key), list):
                stack.extend(current[key])
    return found if found or closed else None


def _resolve(root: Schema, node: Any) -> Any:
    for _ in range(20):
        if not (isinstance(node, Mapping) and isinstance(node.get("$ref"), str)):
            return node
        ref: str = node["$ref"]
        if not ref.startswith("#"):
            return {}  # a remote reference: Beacon never fetches one, so it declares nothing
        node = root
        for part in filter(None, ref[1:].split("/")):
            node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
            if not isinstance(node, Mapping):
                return {}
    return node


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    """Fill in the variables of every text in a JSON value from `scope` (see the docstring)."""
    if isinstance(value, str):
        return _render_text(value, scope)
    if isinstance(value, Mapping):
        return {key: render(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, scope) for item in value]
    return value


def _render_text(text: str, scope: Mapping[str, Any]) -> Any:
    whole = _VARIABLE.fullmatch(text)
    if whole is not None:
        return _value(whole.group(1), scope)
    return _VARIABLE.sub(lambda match: _text(_value(match.group(1), scope)), text)


def _value(name: str, scope: Mapping[str, Any]) -> Any:
    return lookup(scope, tuple(name.split("."))) if _NAME.fullmatch(name) else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return jsonio.dumps_text(value)
