"""The channels Beacon can send through: an explicit registry of self-describing specs.

A channel module declares a settings dataclass (each field's `metadata["doc"]` says what it is,
`metadata["secret"]` marks passwords and keys), its `ChannelSpec` (built from those fields by
`settings_spec`) and a factory; `default_registry()` lists the built-in ones, and a plugin can
`register` more. `create` reads a channel's configuration into its settings, refusing missing,
unknown or mistyped settings by name, before the factory sees it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from beacon.core.clock import Clock
from beacon.deliveries.channels.base import Channel, ChannelSpec, SettingSpec
from beacon.deliveries.outbound import OutboundHttp

S = TypeVar("S")
TokenProvider = Callable[[], Awaitable[str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelServices:
    """What channels get from the process: the outbound HTTP client, the clock, tokens, and
    the signed URL a provider reports one delivery's fate to (when Beacon has a public URL)."""

    outbound: OutboundHttp
    clock: Clock
    bearer_token: TokenProvider | None = None
    status_url: Callable[[str], str] | None = None


Factory = Callable[[Mapping[str, Any], ChannelServices], Channel]


class ChannelRegistry:
    """Channel names to their specs and factories; nothing is found by import side effects."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[ChannelSpec, Factory]] = {}

    def register(self, spec: ChannelSpec, factory: Factory) -> None:
        """Add a channel; a name is registered once."""
        if spec.name in self._entries:
            raise ValueError(f"a channel named {spec.name!r} is already registered")
        self._entries[spec.name] = (spec, factory)

    def specs(self) -> list[ChannelSpec]:
        """Return every registered channel's spec, by name."""
        return [self._entries[name][0] for name in sorted(self._entries)]

    def spec(self, name: str) -> ChannelSpec:
        """Return one channel's spec, or say which channels exist."""
        return self._entry(name)[0]

    def create(
        self, name: str, *, settings: Mapping[str, Any], services: ChannelServices
    ) -> Channel:
        """Return the channel `name` configured with `settings`."""
        return self._entry(name)[1](settings, services)

    def _entry(self, name: str) -> tuple[ChannelSpec, Factory]:
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"no channel named {name!r} (known: {known})")
        return entry


def default_registry() -> ChannelRegistry:
    """Return a registry of the built-in channels."""
    # Imported here: each channel module imports this one for `read_settings`.
    from beacon.deliveries.channels import capture, email, push, sms, webhook

    registry = ChannelRegistry()
    registry.register(capture.SPEC, capture.create)
    registry.register(email.SPEC, email.create)
    registry.register(sms.SPEC, sms.create)
    registry.register(push.WEB_PUSH_SPEC, push.create_web_push)
    registry.register(push.FCM_SPEC, push.create_fcm)
    registry.register(webhook.SPEC, webhook.create)
    return registry


def settings_spec(settings: type[Any]) -> tuple[SettingSpec, ...]:
    """Describe a settings dataclass: each field's name, doc, whether required or secret."""
    return tuple(
        SettingSpec(
            name=f.name,
            description=f.metadata.get("doc", ""),
            required=f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            secret=bool(f.metadata.get("secret", False)),
        )
        for f in dataclasses.fields(settings)
    )


def read_settings(settings: type[S], raw: Mapping[str, Any], *, channel: str) -> S:
    """Build `settings` from configuration, naming each missing, unknown or mistyped setting."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{channel} settings must be an object")
    fields = {f.name: f for f in dataclasses.fields(settings)}  # type: ignore[arg-type]
    hints = get_type_hints(settings)
    problems = [f"unknown setting {key!r}" for key in raw if key not in fields]
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        if name not in raw:
            required = spec.default is dataclasses.MISSING
            if required and spec.default_factory is dataclasses.MISSING:
                problems.append(f"{name!r} is required")
            continue
        problem = _type_problem(raw[name], hints[name])
        if problem:
            problems.append(f"{name!r} must be {problem}")
        else:
            value = raw[name]
            values[name] = tuple(value) if isinstance(value, list) else value
    if problems:
        raise ValueError(f"{channel} settings: " + "; ".join(problems))
    try:
        return settings(**values)
    except ValueError as error:
        raise ValueError(f"{channel} settings: {error}") from None


def _type_problem(value: Any, hint: Any) -> str | None:
    """Return what `value` should be if it does not fit `hint`, else None."""
    origin = get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        wanted = [o for o in options if o is not type(None)]
        problems = [_type_problem(value, option) for option in wanted]
        return None if None in problems else " or ".join(p for p in problems if p)
    if origin is Literal:
        choices = get_args(hint)
        return None if value in choices else "one of " + ", ".join(map(repr, choices))
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "a number"
    if hint is str:
        return None if isinstance(value, str) and value else "non-empty text"
    if origin is tuple:
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        return None if ok else "a list of text"
    raise TypeError(f"settings cannot hold {hint!r}")
