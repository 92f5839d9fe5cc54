"""Push: Web Push to browsers (RFC 8291 encryption, VAPID), and Firebase Cloud Messaging HTTP v1.

Web Push posts the payload, encrypted for the subscription's keys (aes128gcm), to the endpoint
the browser gave, with a VAPID `Authorization` signed by the operator's key. The web tracker's
`beacon.subscribePush()` asks the browser for that subscription with the public key that
`GET /tracker/push-key` serves, and stores it as the profile's `push_subscription` trait. The
endpoint is a URL a browser chose, so it goes through the outbound checks like a webhook. 404
and 410 mean the subscription is gone: a permanent failure that unsubscribes it.

FCM posts `{"message": {"token", "notification", "data"}}` to
`{base_url}/v1/projects/{project_id}/messages:send` with a bearer token from the token provider
the process gives (a service account's OAuth token); the answer's `name` is the message id.
`UNREGISTERED` unsubscribes the token.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02  # type: ignore[import-untyped]
from pywebpush import WebPusher  # type: ignore[import-untyped]

from beacon.core import jsonio
from beacon.core.clock import Clock
from beacon.deliveries.channels.answers import (
    PROVIDER_ANSWER_LIMIT,
    json_answer,
    result_of,
    result_of_error,
)
from beacon.deliveries.channels.base import (
    ChannelSpec,
    DeviceToken,
    Outcome,
    PushSubscription,
    Recipient,
    SendResult,
    mismatch,
)
from beacon.deliveries.channels.registry import (
    ChannelServices,
    TokenProvider,
    read_settings,
    settings_spec,
)
from beacon.deliveries.outbound import OutboundError, OutboundHttp
from beacon.deliveries.templates import Rendered

# RFC 8291: a push message is at most 4096 bytes; aes128gcm takes 86 for its header, 16 for
# the tag and 1 for the padding delimiter.
MAX_WEB_PUSH_PAYLOAD = 4096 - 86 - 16 - 1
VAPID_LIFETIME = timedelta(hours=12)
GONE_STATUSES = (404, 410)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebPushSettings:
    """The operator's VAPID identity and how long push services keep an undelivered message."""

    vapid_private_key: str = field(
        repr=False,
        metadata={"doc": "VAPID private key: base64url raw P-256 key, DER or PEM", "secret": True},
    )
    vapid_subject: str = field(metadata={"doc": "contact for push services: mailto: or https:"})
    ttl: int = field(default=86400, metadata={"doc": "seconds a push service keeps a message"})
    urgency: Literal["very-low", "low", "normal", "high"] = field(
        default="normal", metadata={"doc": "Urgency header: very-low, low, normal, high"}
    )

    def __post_init__(self) -> None:
        if not self.vapid_subject.startswith(("mailto:", "https://")):
            raise ValueError("vapid_subject must be a mailto: or https: URL")
        if not 0 <= self.ttl <= 2419200:
            raise ValueError("ttl must be 0 to 2419200 seconds (28 days)")
        read_vapid_key(self.vapid_private_key)


def read_vapid_key(key: str) -> Any:
    """Return the VAPID signer for `key`, or say that it is not a P-256 private key."""
    try:
        if "-----BEGIN" in key:
            return Vapid02.from_pem(key.encode())
        return Vapid02.from_string(key)
    except Exception:  # py_vapid raises what its parsers raise
        raise ValueError(
            "vapid_private_key is not a P-256 private key (base64url raw, DER or PEM)"
        ) from None


def vapid_public_key(private_key: str) -> str:
    """Return the public half of a VAPID key as browsers take it: the uncompressed P-256
    point, base64url without padding (`pushManager.subscribe`'s `applicationServerKey`)."""
    point = read_vapid_key(private_key).public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(point).rstrip(b"=").decode()


WEB_PUSH_SPEC = ChannelSpec(
    name="web_push",
    description="Web Push to browsers, encrypted (RFC 8291) and signed with VAPID (RFC 8292)",
    kinds=("push",),
    recipient="a browser's push subscription (endpoint, keys p256dh and auth)",
    settings=settings_spec(WebPushSettings),
)


class WebPushChannel:
    """Sends push messages to browsers' push services."""

    spec = WEB_PUSH_SPEC

    def __init__(self, settings: WebPushSettings, *, outbound: OutboundHttp, clock: Clock) -> None:
        self._settings = settings
        self._vapid = read_vapid_key(settings.vapid_private_key)
        self._outbound = outbound
        self._clock = clock

    async def send(self, rendered: Rendered, recipient: Recipient) -> SendResult:
        """Encrypt the message for the subscription and post it to its push service."""
        wrong = mismatch(WEB_PUSH_SPEC, rendered, recipient, PushSubscription)
        if wrong:
            return SendResult.permanent(wrong)
        assert isinstance(recipient, PushSubscription)
        payload = jsonio.dumps(_notification(rendered))
        if len(payload) > MAX_WEB_PUSH_PAYLOAD:
            return SendResult.permanent(
                f"the push message is {len(payload)} bytes; Web Push carries at most "
                f"{MAX_WEB_PUSH_PAYLOAD}"
            )
        subscription = {
            "endpoint": recipient.endpoint,
            "keys": {"p256dh": recipient.p256dh, "auth": recipient.auth},
        }
        encrypted = WebPusher(subscription).encode(payload, content_encoding="aes128gcm")
        endpoint = urlsplit(recipient.endpoint)
        claims = {
            "sub": self._settings.vapid_subject,
            "aud": f"{endpoint.scheme}://{endpoint.netloc}",
            "exp": int((self._clock.now() + VAPID_LIFETIME).timestamp()),
        }
        headers = {
            **self._vapid.sign(claims),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self._settings.ttl),
            "Urgency": self._settings.urgency,
        }
        try:
            response = await self._outbound.post(
                recipient.endpoint, content=encrypted["body"], headers=headers
            )
        except OutboundError as error:
            return result_of_error(error)
        return result_of(
            response,
            provider_id=response.headers.get("location"),
            unsubscribe=GONE_STATUSES,
            note="the subscription is gone: unsubscribe it"
            if response.status in GONE_STATUSES
            else "",
        )


def create_web_push(settings: Mapping[str, Any], services: ChannelServices) -> WebPushChannel:
    """Return the Web Push channel the configuration describes."""
    read = read_settings(WebPushSettings, settings, channel="web_push")
    return WebPushChannel(read, outbound=services.outbound, clock=services.clock)


@dataclass(frozen=True, slots=True, kw_only=True)
class FcmSettings:
    """The Firebase project messages are sent as."""

    project_id: str = field(metadata={"doc": "Firebase project id"})
    base_url: str = field(
        default="https://fcm.googleapis.com", metadata={"doc": "the FCM API's base URL"}
    )

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url {self.base_url!r} is not an absolute http(s) URL")


FCM_SPEC = ChannelSpec(
    name="fcm",
    description="Firebase Cloud Messaging HTTP v1 (Android, iOS and web apps)",
    kinds=("push",),
    recipient="an FCM registration token",
    settings=settings_spec(FcmSettings),
)


class FcmChannel:
    """Sends push messages through Firebase Cloud Messaging."""

    spec = FCM_SPEC

    def __init__(
        self, settings: FcmSettings, *, outbound: OutboundHttp, bearer_token: TokenProvider
    ) -> None:
        project = quote(settings.project_id, safe="")
        self._url = f"{settings.base_url.rstrip('/')}/v1/projects/{project}/messages:send"
        self._outbound = outbound
        self._bearer_token = bearer_token

    async def send(self, rendered: Rendered, recipient: Recipient) -> SendResult:
        """Post the message for one registration token; FCM's answer decides the outcome."""
        wrong = mismatch(FCM_SPEC, rendered, recipient, DeviceToken)
        if wrong:
            return SendResult.permanent(wrong)
        assert isinstance(recipient, DeviceToken)
        notification = _notification(rendered)
        data = {"delivery_id": rendered.delivery_id}
        if "url" in notification:
            data["url"] = notification["url"]
        body = {
            "message": {
                "token": recipient.token,
                "notification": {"title": notification["title"], "body": notification["body"]},
                "data": data,
            }
        }
        try:
            token = await self._bearer_token()
        except Exception as error:  # whatever the provider raises, this attempt is lost
            return SendResult.temporary(f"no FCM access token: {type(error).__name__}: {error}")
        try:
            response = await self._outbound.post(
                self._url,
                content=jsonio.dumps(body),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                read_limit=PROVIDER_ANSWER_LIMIT,
            )
        except OutboundError as error:
            return result_of_error(error)
        answer = json_answer(response)
        name = answer.get("name")
        result = result_of(
            response,
            provider_id=name if isinstance(name, str) else None,
            temporary=(401, 408, 429),
        )
        if result.outcome is Outcome.FAILED_PERMANENT and _fcm_error_code(answer) == "UNREGISTERED":
            return SendResult(
                outcome=Outcome.FAILED_PERMANENT,
                description=result.description + " (the token is unregistered: unsubscribe it)",
                unsubscribe=True,
                latency_ms=result.latency_ms,
            )
        return result


def create_fcm(settings: Mapping[str, Any], services: ChannelServices) -> FcmChannel:
    """Return the FCM channel the configuration describes; it needs the process's token provider."""
    read = read_settings(FcmSettings, settings, channel="fcm")
    if services.bearer_token is None:
        raise ValueError("fcm needs an OAuth access token provider (a service account)")
    return FcmChannel(read, outbound=services.outbound, bearer_token=services.bearer_token)


def _notification(rendered: Rendered) -> dict[str, str]:
    parts = rendered.parts
    shown = {"title": parts["title"], "body": parts["body"], "delivery_id": rendered.delivery_id}
    if parts.get("url"):
        shown["url"] = parts["url"]
    return shown


def _fcm_error_code(answer: Mapping[str, Any]) -> str | None:
    """Return FCM's errorCode (UNREGISTERED, ...) from an error answer's details."""
    error = answer.get("error")
    details = error.get("details") if isinstance(error, Mapping) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, Mapping) and isinstance(detail.get("errorCode"), str):
            return str(detail["errorCode"])
    return None
