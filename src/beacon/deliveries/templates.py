"""Message templates: per-channel parts in sandboxed Jinja2, checked when saved, rendered per send.

A template is JSON: `{"email": {"subject", "html", "text"}, "sms": {"text"}, "push": {"title",
"body", "url"}, "webhook": {"body"}}`, any of the channels; email needs a subject and html or
text, sms its text, push a title and a body, a webhook its body (JSON once rendered: write values
with `| tojson`). Only `html` is autoescaped. A template reads four roots:

    profile   id, traits, attributes (computed), identities (kind -> value)
    event     id, type, time (ISO 8601), properties   (the event that triggered the message)
    context   whatever the journey step or API call passed
    message   id, delivery_id, tag, view_online_url, unsubscribe_url

`parse_template` refuses, naming the part and line: syntax errors, unknown filters and tests,
sandbox escapes (attributes starting with `_`, `__dunder__` items), `extends`, `include` and
`import`, names that are no root (or a root's field that cannot exist, `profile.nmae`), and
setting a root. `render` fails with `RenderError` naming the variable when a value is missing
and has no `default(...)`, so a message never goes out with a hole in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from jinja2 import Template as CompiledPart
from jinja2 import TemplateSyntaxError, meta, nodes

from beacon.core import jsonio
from beacon.deliveries.sandbox import Sandbox, render_bounded, template_data

ChannelKind = Literal["email", "sms", "push", "webhook"]
CHANNEL_KINDS: tuple[ChannelKind, ...] = get_args(ChannelKind)
PARTS: dict[ChannelKind, tuple[str, ...]] = {
    "email": ("subject", "html", "text"),
    "sms": ("text",),
    "push": ("title", "body", "url"),
    "webhook": ("body",),
}
REQUIRED: dict[ChannelKind, tuple[str, ...]] = {
    "email": ("subject",),
    "sms": ("text",),
    "push": ("title", "body"),
    "webhook": ("body",),
}
FIELDS: dict[str, tuple[str, ...] | None] = {
    "profile": ("id", "traits", "attributes", "identities"),
    "event": ("id", "type", "time", "properties"),
    "context": None,
    "message": ("id", "delivery_id", "tag", "view_online_url", "unsubscribe_url"),
}
MAX_SOURCE_CHARS = 512 * 1024
_HTML = Sandbox(autoescape=True)
_TEXT = Sandbox(autoescape=False)
_TEMPLATE_FILE = "<template>"


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    """One reason a template is refused: which part, which line (when known), what."""

    part: str
    line: int | None
    type: str
    msg: str

    def __str__(self) -> str:
        where = self.part + (f" line {self.line}" if self.line is not None else "")
        return f"{where}: {self.msg}" if where else self.msg

    def as_json(self) -> dict[str, Any]:
        return {"part": self.part, "line": self.line, "type": self.type, "msg": self.msg}


class InvalidTemplate(ValueError):
    """A template that cannot be saved; `problems` names every reason."""

    def __init__(self, problems: list[TemplateProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class RenderError(ValueError):
    """A template that could not be rendered for one message; the delivery fails with it."""

    def __init__(self, part: str, msg: str, *, line: int | None = None) -> None:
        self.part, self.line = part, line
        super().__init__(f"{part}{f' line {line}' if line else ''}: {msg}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileView:
    """The profile a message is for, as templates see it."""

    id: str
    traits: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    identities: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventView:
    """The event that triggered a message."""

    type: str
    id: str | None = None
    time: datetime | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageView:
    """The message itself: its ids and its signed links."""

    id: str
    delivery_id: str
    tag: str | None = None
    view_online_url: str | None = None
    unsubscribe_url: str | None = None
    one_click_unsubscribe_url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateVariables:
    """Everything one rendering reads."""

    profile: ProfileView
    message: MessageView
    event: EventView | None = None
    context: Mapping[str, Any] = field(default_factory=dict)

    def as_data(self) -> dict[str, Any]:
        """Return the four roots as template data."""
        event = self.event
        message = self.message
        return {
            "profile": template_data(
                {
                    "id": self.profile.id,
                    "traits": self.profile.traits,
                    "attributes": self.profile.attributes,
                    "identities": self.profile.identities,
                },
                "profile",
            ),
            "event": template_data(
                {}
                if event is None
                else {
                    "id": event.id,
                    "type": event.type,
                    "time": None if event.time is None else event.time.isoformat(),
                    "properties": event.properties,
                },
                "event",
            ),
            "context": template_data(self.context, "context"),
            "message": template_data(
                {
                    "id": message.id,
                    "delivery_id": message.delivery_id,
                    "tag": message.tag,
                    "view_online_url": message.view_online_url,
                    "unsubscribe_url": message.unsubscribe_url,
                },
                "message",
            ),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """What a template made for one delivery on one channel, ready for a `Channel` to send."""

    channel: ChannelKind
    parts: Mapping[str, str]
    delivery_id: str
    one_click_unsubscribe_url: str | None = None


@dataclass(frozen=True, slots=True)
class Template:
    """A checked template: its sources per channel and part, compiled once."""

    sources: Mapping[ChannelKind, Mapping[str, str]]
    compiled: Mapping[ChannelKind, Mapping[str, CompiledPart]] = field(compare=False, repr=False)

    def to_json(self) -> dict[str, dict[str, str]]:
        """Return the template as it is stored."""
        return {channel: dict(parts) for channel, parts in self.sources.items()}


def parse_template(raw: Any) -> Template:
    """Return the template `raw` describes, or raise `InvalidTemplate` naming every problem."""
    problems: list[TemplateProblem] = []
    if not isinstance(raw, Mapping) or not raw:
        raise InvalidTemplate(
            [TemplateProblem("", None, "malformed", "a template is a JSON object of channels")]
        )
    sources: dict[ChannelKind, dict[str, str]] = {}
    compiled: dict[ChannelKind, dict[str, CompiledPart]] = {}
    for channel, parts in raw.items():
        if channel not in CHANNEL_KINDS:
            known = ", ".join(CHANNEL_KINDS)
            problems.append(
                TemplateProblem(
                    str(channel), None, "unknown_channel", f"unknown channel (known: {known})"
                )
            )
            continue
        read = _read_channel(channel, parts, problems)
        if read is not None:
            sources[channel], compiled[channel] = read
    if problems:
        raise InvalidTemplate(problems)
    return Template(sources, compiled)


def render(template: Template, *, channel: ChannelKind, variables: TemplateVariables) -> Rendered:
    """Render the template's parts for `channel`, or raise `RenderError` naming what failed."""
    parts = template.compiled.get(channel)
    if parts is None:
        raise RenderError(channel, f"the template has no {channel} parts")
    data = variables.as_data()
    out: dict[str, str] = {}
    for name, part in parts.items():
        where = f"{channel}.{name}"
        try:
            out[name] = render_bounded(part, data)
        except Exception as error:  # whatever a template does wrong fails this delivery alone
            raise RenderError(where, str(error), line=_line_of(error.__traceback__)) from None
    _check_output(channel, out)
    return Rendered(
        channel=channel,
        parts=out,
        delivery_id=variables.message.delivery_id,
        one_click_unsubscribe_url=variables.message.one_click_unsubscribe_url,
    )


def _read_channel(
    channel: ChannelKind, parts: Any, problems: list[TemplateProblem]
) -> tuple[dict[str, str], dict[str, CompiledPart]] | None:
    if not isinstance(parts, Mapping):
        problems.append(TemplateProblem(channel, None, "malformed", "must be a JSON object"))
        return None
    sources: dict[str, str] = {}
    compiled: dict[str, CompiledPart] = {}
    for name, source in parts.items():
        where = f"{channel}.{name}"
        if name not in PARTS[channel]:
            known = ", ".join(PARTS[channel])
            problems.append(TemplateProblem(where, None, "unknown_part", f"known: {known}"))
        elif not isinstance(source, str):
            problems.append(TemplateProblem(where, None, "malformed", "must be text"))
        elif len(source) > MAX_SOURCE_CHARS:
            problems.append(
                TemplateProblem(where, None, "too_large", f"over {MAX_SOURCE_CHARS:,} characters")
            )
        else:
            part = _compile_part(where, source, html=name == "html", problems=problems)
            if part is not None:
                sources[name], compiled[name] = source, part
    for name in REQUIRED[channel]:
        if name not in parts:
            problems.append(TemplateProblem(f"{channel}.{name}", None, "missing", "required"))
    if channel == "email" and "html" not in parts and "text" not in parts:
        problems.append(
            TemplateProblem(channel, None, "missing", "an email needs an html or a text part")
        )
    return sources, compiled


def _compile_part(
    where: str, source: str, *, html: bool, problems: list[TemplateProblem]
) -> CompiledPart | None:
    env = _HTML if html else _TEXT
    try:
        # Compiling runs nothing; it finds syntax errors and unknown filters and tests.
        compiled = env.from_string(source)
        tree = env.parse(source)
    except TemplateSyntaxError as error:
        problems.append(TemplateProblem(where, error.lineno, "syntax", error.message or "syntax"))
        return None
    found = _check_tree(where, tree, env.globals)
    problems.extend(sorted(found, key=lambda p: p.line or 0))
    return None if found else compiled


def _check_tree(
    where: str, tree: nodes.Template, known: Mapping[str, Any]
) -> list[TemplateProblem]:
    found: list[TemplateProblem] = []

    def add(node: nodes.Node, kind: str, msg: str) -> None:
        found.append(TemplateProblem(where, node.lineno, kind, msg))

    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        tag = type(node).__name__.lower().replace("fromimport", "from … import")
        add(node, "not_allowed", f"{tag} is not allowed: a template stands alone")
    for getattr_node in tree.find_all(nodes.Getattr):
        if getattr_node.attr.startswith("_"):
            add(getattr_node, "unsafe", f"attribute {getattr_node.attr!r} is not allowed")
        else:
            _check_field(getattr_node.node, getattr_node.attr, getattr_node, add)
    for item in tree.find_all(nodes.Getitem):
        if isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str):
            if item.arg.value.startswith("__"):
                add(item, "unsafe", f"item {item.arg.value!r} is not allowed")
            else:
                _check_field(item.node, item.arg.value, item, add)
    for name in tree.find_all(nodes.Name):
        if name.ctx in ("store", "param") and name.name in FIELDS:
            add(name, "reserved_name", f"{name.name!r} is a template root and cannot be set")
    for macro in tree.find_all(nodes.Macro):
        if macro.name in FIELDS:
            add(macro, "reserved_name", f"{macro.name!r} is a template root and cannot be set")
    for unknown in sorted(meta.find_undeclared_variables(tree) - set(FIELDS) - set(known)):
        first = next(n for n in tree.find_all(nodes.Name) if n.name == unknown)
        roots = ", ".join(FIELDS)
        add(first, "unknown_variable", f"{unknown!r} does not exist (a template reads {roots})")
    return found


def _check_field(target: nodes.Node, key: str, node: nodes.Node, add: Any) -> None:
    if not (isinstance(target, nodes.Name) and target.ctx == "load"):
        return
    fields = FIELDS.get(target.name)
    if fields is not None and key not in fields:
        add(
            node,
            "unknown_field",
            f"{target.name} has no {key!r} (it has: {', '.join(fields)})",
        )


def _check_output(channel: ChannelKind, out: dict[str, str]) -> None:
    for name in REQUIRED[channel]:
        if not out[name].strip():
            raise RenderError(f"{channel}.{name}", "rendered empty")
    if channel == "email":
        if "\n" in out["subject"] or "\r" in out["subject"]:
            raise RenderError("email.subject", "a subject is one line; it rendered several")
        if not any(out.get(name, "").strip() for name in ("html", "text")):
            raise RenderError("email", "both the html and the text rendered empty")
    if channel == "push" and "url" in out:
        url = out["url"].strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RenderError("push.url", f"rendered {url[:80]!r}, not an absolute http(s) URL")
        out["url"] = url
    if channel == "webhook":
        try:
            jsonio.loads(out["body"])
        except jsonio.JSONDecodeError as error:
            raise RenderError(
                "webhook.body", f"is not JSON ({error}); write values with | tojson"
            ) from None


def _line_of(trace: TracebackType | None) -> int | None:
    """The template line an error happened on: Jinja2 puts template frames in tracebacks."""
    line = None
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == _TEMPLATE_FILE:
            line = trace.tb_lineno
        trace = trace.tb_next
    return line
