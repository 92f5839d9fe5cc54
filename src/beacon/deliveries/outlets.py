"""Where messages go out, as the settings say: the channel per kind of message (capture unless
told otherwise), each channel's settings, the links' signer and the outbound HTTP policy.

Checked once when a process starts (a channel named but unknown, a setting missing or
mistyped, a bad network: the process stops saying which). Channels are opened per batch of
sends (`open`), over one outbound HTTP client that is closed after it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from beacon.core.clock import SystemClock
from beacon.deliveries.channels.base import Channel
from beacon.deliveries.channels.registry import ChannelRegistry, ChannelServices, default_registry
from beacon.deliveries.links import LinkSigner
from beacon.deliveries.outbound import OutboundHttp, OutboundPolicy, allow_networks
from beacon.deliveries.templates import CHANNEL_KINDS, ChannelKind
from beacon.settings import Settings

CAPTURE = "capture"


class OutletsError(ValueError):
    """Settings that cannot send: the text names the setting and the problem."""


@dataclass(frozen=True, slots=True)
class Outlets:
    """The channels, links and HTTP policy of this deployment."""

    signer: LinkSigner
    policy: OutboundPolicy
    webhook_policy: OutboundPolicy
    choices: Mapping[ChannelKind, str]
    channel_settings: Mapping[str, Mapping[str, Any]]
    registry: ChannelRegistry = field(default_factory=default_registry)
    reachable: bool = False  # BEACON_PUBLIC_URL is set: providers can call Beacon back

    @classmethod
    def from_settings(cls, settings: Settings) -> Outlets:
        """Read and check the settings, or raise `OutletsError` naming what is wrong."""
        registry = default_registry()
        try:
            allow = allow_networks(settings.outbound_allow_networks)
            policy = OutboundPolicy(allow=allow)
            webhook_policy = OutboundPolicy(allow=allow, timeout=settings.webhook_timeout_seconds)
            signer = LinkSigner(secrets=link_secrets(settings), base_url=public_url(settings))
        except ValueError as error:
            raise OutletsError(str(error)) from None
        choices: dict[ChannelKind, str] = {}
        for kind, name in settings.delivery_channels.items():
            if kind not in CHANNEL_KINDS:
                raise OutletsError(
                    f"BEACON_DELIVERY_CHANNELS: {kind!r} is no kind of message"
                    f" (kinds: {', '.join(CHANNEL_KINDS)})"
                )
            try:
                spec = registry.spec(name)
            except KeyError as error:
                raise OutletsError(f"BEACON_DELIVERY_CHANNELS: {error.args[0]}") from None
            if kind not in spec.kinds:
                raise OutletsError(
                    f"BEACON_DELIVERY_CHANNELS: the {name} channel cannot send {kind} messages"
                )
            choices[kind] = name
        outlets = cls(
            signer=signer,
            policy=policy,
            webhook_policy=webhook_policy,
            choices=choices,
            channel_settings=settings.channel_settings,
            registry=registry,
            reachable=settings.public_url is not None,
        )
        outlets._check_channels()
        return outlets

    def channel_for(self, requested: str, kind: ChannelKind) -> str:
        """Return the channel that sends a `kind` message asked for on `requested` (a kind, or
        "capture" to see what would go out)."""
        return CAPTURE if requested == CAPTURE else self.choices.get(kind, CAPTURE)

    @asynccontextmanager
    async def open(self) -> AsyncIterator[OpenChannels]:
        """Channels ready to send, over an HTTP client closed when the block ends."""
        async with OutboundHttp(policy=self.policy, user_agent="Beacon") as outbound:
            services = ChannelServices(
                outbound=outbound, clock=SystemClock(), status_url=self._status_url()
            )
            yield OpenChannels(self, services)

    def _status_url(self) -> Callable[[str], str] | None:
        """The signed URL of a delivery's status reports, if providers can reach Beacon."""
        if not self.reachable:
            return None
        signer = self.signer

        def url(delivery_id: str) -> str:
            return signer.url(purpose="sms_status", delivery_id=delivery_id)

        return url

    def _check_channels(self) -> None:
        names = {CAPTURE, *self.choices.values(), *self.channel_settings}
        services = ChannelServices(outbound=OutboundHttp(policy=self.policy), clock=SystemClock())
        for name in sorted(names):
            try:
                self.registry.create(
                    name, settings=self.channel_settings.get(name, {}), services=services
                )
            except KeyError as error:
                raise OutletsError(f"BEACON_CHANNEL_SETTINGS: {error.args[0]}") from None
            except ValueError as error:
                raise OutletsError(f"BEACON_CHANNEL_SETTINGS: {error}") from None


class OpenChannels:
    """The channels of one batch of sends, each made on first use."""

    def __init__(self, outlets: Outlets, services: ChannelServices) -> None:
        self._outlets = outlets
        self.services = services
        self._made: dict[str, Channel] = {}

    def get(self, name: str) -> Channel:
        """Return the channel `name`, configured."""
        channel = self._made.get(name)
        if channel is None:
            settings = self._outlets.channel_settings.get(name, {})
            channel = self._outlets.registry.create(name, settings=settings, services=self.services)
            self._made[name] = channel
        return channel


def public_url(settings: Settings) -> str:
    """Return the base URL of links in messages."""
    return settings.public_url or f"http://{settings.host}:{settings.port}"


def link_secrets(settings: Settings) -> list[str]:
    """Return the links' secrets: the configured ones, else one derived from the admin token
    (which production requires to be strong; changing it then breaks links already sent)."""
    if settings.link_secrets:
        return list(settings.link_secrets)
    derived = hmac.new(settings.admin_token.encode(), b"beacon link secret v1", hashlib.sha256)
    return [derived.hexdigest()]
