"""What every channel is: `send(rendered, recipient) -> SendResult`, and what it says of itself."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit

from beacon.deliveries.templates import ChannelKind, Rendered


class Outcome(StrEnum):
    """How a send ended: accepted by the provider, or failed for good, or failed for now."""

    ACCEPTED = "accepted"
    FAILED_PERMANENT = "failed_permanent"
    FAILED_TEMPORARY = "failed_temporary"


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    """The outcome of one attempt, and what the delivery log keeps of it.

    `retry_after` is the provider's `Retry-After` for the retry policy; `unsubscribe` says the
    address is gone for good (a push subscription the browser dropped); `captured` is what
    would have gone out, from the capture channel; `latency_ms` how long an HTTP provider took.
    """

    outcome: Outcome
    provider_id: str | None = None
    description: str = ""
    retry_after: str | None = None
    unsubscribe: bool = False
    captured: Mapping[str, Any] | None = None
    latency_ms: float | None = None

    @classmethod
    def accepted(cls, provider_id: str | None, description: str = "") -> SendResult:
        return cls(outcome=Outcome.ACCEPTED, provider_id=provider_id, description=description)

    @classmethod
    def permanent(cls, description: str, *, unsubscribe: bool = False) -> SendResult:
        return cls(
            outcome=Outcome.FAILED_PERMANENT, description=description, unsubscribe=unsubscribe
        )

    @classmethod
    def temporary(cls, description: str, *, retry_after: str | None = None) -> SendResult:
        return cls(
            outcome=Outcome.FAILED_TEMPORARY, description=description, retry_after=retry_after
        )


@dataclass(frozen=True, slots=True)
class EmailAddress:
    """An email recipient."""

    address: str
    name: str | None = None

    def __post_init__(self) -> None:
        local, at, domain = self.address.rpartition("@")
        if not at or not local or "." not in domain or _has_line_break(self.address):
            raise ValueError(f"{self.address[:80]!r} is not an email address")
        if self.name is not None and _has_line_break(self.name):
            raise ValueError("a recipient's name may not contain line breaks")


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """An SMS recipient, in E.164 form (`+380501234567`)."""

    number: str

    def __post_init__(self) -> None:
        digits = self.number[1:]
        if not (self.number.startswith("+") and digits.isascii() and digits.isdigit()):
            raise ValueError(f"{self.number[:40]!r} is not an E.164 phone number (+ and digits)")
        if not 8 <= len(digits) <= 15:
            raise ValueError("an E.164 phone number has 8 to 15 digits")


@dataclass(frozen=True, slots=True)
class PushSubscription:
    """A Web Push subscription as the browser gives it: endpoint, keys p256dh and auth."""

    endpoint: str
    p256dh: str
    auth: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a push subscription's endpoint must be an http(s) URL")
        if len(_b64url(self.p256dh, "keys.p256dh")) != 65:
            raise ValueError("keys.p256dh must be an uncompressed P-256 public key (65 bytes)")
        if len(_b64url(self.auth, "keys.auth")) != 16:
            raise ValueError("keys.auth must be a 16-byte secret")

    @classmethod
    def from_json(cls, raw: Any) -> PushSubscription:
        """Read `PushSubscription.toJSON()` from a browser: {endpoint, keys: {p256dh, auth}}."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("endpoint"), str):
            raise ValueError("a push subscription is an object with an endpoint URL")
        keys = raw.get("keys")
        if not isinstance(keys, Mapping):
            raise ValueError("a push subscription needs its keys (p256dh and auth)")
        p256dh, auth = keys.get("p256dh"), keys.get("auth")
        if not isinstance(p256dh, str) or not isinstance(auth, str):
            raise ValueError("a push subscription's keys.p256dh and keys.auth must be text")
        return cls(raw["endpoint"], p256dh, auth)


@dataclass(frozen=True, slots=True)
class DeviceToken:
    """An FCM registration token of one app install."""

    token: str

    def __post_init__(self) -> None:
        if not self.token or len(self.token) > 4096 or _has_line_break(self.token):
            raise ValueError("an FCM registration token is one line of text")


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """A customer's webhook URL with its active signing secrets (the first is the newest; none:
    the call is not signed) and headers of its own (a journey's webhook step sets some)."""

    url: str
    secrets: tuple[str, ...] = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{self.url[:80]!r} is not an absolute http(s) URL")


Recipient = EmailAddress | PhoneNumber | PushSubscription | DeviceToken | WebhookEndpoint


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One setting a channel needs configured."""

    name: str
    description: str
    required: bool = True
    secret: bool = False


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """What a channel is, what it sends, to whom, and what it needs configured."""

    name: str
    description: str
    kinds: tuple[ChannelKind, ...]
    recipient: str
    settings: tuple[SettingSpec, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "kinds": list(self.kinds),
            "recipient": self.recipient,
            "settings": [
                {
                    "name": s.name,
                    "description": s.description,
                    "required": s.required,
                    "secret": s.secret,
                }
                for s in self.settings
            ],
        }


class Channel(Protocol):
    """Sends one rendered message to one recipient and says how it went; never raises for that."""

    spec: ChannelSpec

    async def send(self, rendered: Rendered, recipient: Recipient) -> SendResult: ...


def mismatch(
    spec: ChannelSpec, rendered: Rendered, recipient: Recipient, wanted: type
) -> str | None:
    """Say why `rendered` and `recipient` are not what this channel sends, if they are not."""
    if rendered.channel not in spec.kinds:
        return f"the {spec.name} channel cannot send a {rendered.channel} message"
    if not isinstance(recipient, wanted):
        return f"the {spec.name} channel sends to {spec.recipient}, not {type(recipient).__name__}"
    return None


def _b64url(value: str, name: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"{name} is not base64url") from None


def _has_line_break(text: str) -> bool:
    return "\n" in text or "\r" in text
