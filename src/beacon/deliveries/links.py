"""Signed links in messages: open pixel, click redirect, view online, unsubscribe, one-click.

A link is `{base_url}{path}{token}`; the token is `PAYLOAD.MAC`, both base64url without
padding: PAYLOAD is compact JSON (`p` purpose, `d` delivery id, `u` the click target, `e` the
expiry as Unix seconds; the last two only when present) and MAC is HMAC-SHA256 over
`beacon-link-v1.` + PAYLOAD under a link secret. The first secret signs, every secret verifies,
so a secret is rotated by putting the new one first and dropping the old one once the links it
signed no longer matter. The purpose is signed, so a token made for one kind of link is refused
as another; a click's target is signed, so the redirect goes only where the message pointed
(no open redirect).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from beacon.core import jsonio

Purpose = Literal["open", "click", "view", "unsubscribe", "one_click_unsubscribe", "sms_status"]
PURPOSES: tuple[Purpose, ...] = get_args(Purpose)
LINK_PATHS: dict[Purpose, str] = {
    "open": "/m/open/",
    "click": "/m/click/",
    "view": "/m/view/",
    "unsubscribe": "/m/unsubscribe/",
    "one_click_unsubscribe": "/m/unsubscribe-one-click/",
    "sms_status": "/m/sms-status/",
}
MIN_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 4096
MAX_TARGET_CHARS = 2048
_DOMAIN = b"beacon-link-v1."
Refusal = Literal["malformed", "bad_signature", "wrong_purpose", "expired"]


class InvalidLink(ValueError):
    """A token that does not verify; `reason` says why in one word."""

    def __init__(self, reason: Refusal, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SignedLink:
    """What a verified token says."""

    purpose: Purpose
    delivery_id: str
    target: str | None
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class MessageLinks:
    """The signed links one message carries besides its tracked clicks."""

    open_pixel_url: str
    view_online_url: str
    unsubscribe_url: str
    one_click_unsubscribe_url: str


class LinkSigner:
    """Makes and verifies the signed links of messages under a list of secrets."""

    def __init__(self, *, secrets: Sequence[str | bytes], base_url: str) -> None:
        self._keys = _read_secrets(secrets)
        self._base_url = _read_base_url(base_url)

    def token(
        self,
        *,
        purpose: Purpose,
        delivery_id: str,
        target: str | None = None,
        expires_at: datetime | None = None,
    ) -> str:
        """Return the signed token for one link."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown link purpose {purpose!r} (known: {', '.join(PURPOSES)})")
        if not delivery_id:
            raise ValueError("a link needs the delivery id it belongs to")
        if (purpose == "click") != (target is not None):
            raise ValueError("a click link needs its target URL, and only a click link has one")
        claims: dict[str, Any] = {"p": purpose, "d": delivery_id}
        if target is not None:
            claims["u"] = check_target(target)
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise ValueError("expires_at must be timezone-aware")
            claims["e"] = int(expires_at.timestamp())
        payload = _b64encode(jsonio.dumps(claims))
        return f"{payload}.{_b64encode(_mac(self._keys[0], payload))}"

    def url(
        self,
        *,
        purpose: Purpose,
        delivery_id: str,
        target: str | None = None,
        expires_at: datetime | None = None,
    ) -> str:
        """Return the full URL of one signed link."""
        token = self.token(
            purpose=purpose, delivery_id=delivery_id, target=target, expires_at=expires_at
        )
        return f"{self._base_url}{LINK_PATHS[purpose]}{token}"

    def click_url(
        self, *, delivery_id: str, target: str, expires_at: datetime | None = None
    ) -> str:
        """Return the tracked redirect to `target` for one delivery."""
        return self.url(
            purpose="click", delivery_id=delivery_id, target=target, expires_at=expires_at
        )

    def message_links(self, *, delivery_id: str) -> MessageLinks:
        """Return a message's open pixel, view-online and unsubscribe links (they never expire)."""
        return MessageLinks(
            open_pixel_url=self.url(purpose="open", delivery_id=delivery_id),
            view_online_url=self.url(purpose="view", delivery_id=delivery_id),
            unsubscribe_url=self.url(purpose="unsubscribe", delivery_id=delivery_id),
            one_click_unsubscribe_url=self.url(
                purpose="one_click_unsubscribe", delivery_id=delivery_id
            ),
        )

    def verify(self, token: str, *, purpose: Purpose, now: datetime) -> SignedLink:
        """Return what `token` says if a current secret signed it for `purpose` and it is live."""
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise InvalidLink("malformed", "the link token is malformed")
        payload, mac_text = token.split(".")
        try:
            mac = _b64decode(mac_text)
        except ValueError:
            raise InvalidLink("malformed", "the link token is malformed") from None
        # Every key is tried, each in constant time; the MAC is checked before the payload is read.
        if not any(hmac.compare_digest(_mac(key, payload), mac) for key in self._keys):
            raise InvalidLink("bad_signature", "the link's signature does not match")
        link = _read_claims(payload)
        if link.purpose != purpose:
            raise InvalidLink("wrong_purpose", f"the link is for {link.purpose!r}, not {purpose!r}")
        if link.expires_at is not None and now >= link.expires_at:
            raise InvalidLink("expired", f"the link expired at {link.expires_at.isoformat()}")
        return link


def check_target(target: str) -> str:
    """Return `target` if it may be a click's destination: an absolute http(s) URL."""
    if len(target) > MAX_TARGET_CHARS:
        raise ValueError(f"a link target is at most {MAX_TARGET_CHARS} characters")
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"a link target must be an absolute http(s) URL, not {target[:80]!r}")
    if any(ch in target for ch in "\r\n\t "):
        raise ValueError("a link target may not contain whitespace")
    return target


def _read_claims(payload: str) -> SignedLink:
    try:
        claims = jsonio.loads(_b64decode(payload))
    except (ValueError, jsonio.JSONDecodeError):
        raise InvalidLink("malformed", "the link token is malformed") from None
    purpose, delivery_id = claims.get("p"), claims.get("d")
    target, expiry = claims.get("u"), claims.get("e")
    if (
        purpose not in PURPOSES
        or not isinstance(delivery_id, str)
        or not isinstance(target, str | None)
        or not (expiry is None or (isinstance(expiry, int) and not isinstance(expiry, bool)))
    ):
        raise InvalidLink("malformed", "the link token is malformed")
    expires_at = None if expiry is None else datetime.fromtimestamp(expiry, UTC)
    return SignedLink(purpose, delivery_id, target, expires_at)


def _read_secrets(secrets: Sequence[str | bytes]) -> tuple[bytes, ...]:
    if isinstance(secrets, str | bytes) or not secrets:
        raise ValueError("link signing needs a list of secrets, the signing one first")
    keys = []
    for number, secret in enumerate(secrets, start=1):
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(
                f"link secret {number} of {len(secrets)} is {len(key)} bytes; it needs at least "
                f"{MIN_SECRET_BYTES} (make one with: python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
        keys.append(key)
    return tuple(keys)


def _read_base_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(
            f"the links' base URL must be an absolute http(s) URL without query or fragment, "
            f"not {base_url!r}"
        )
    return base_url.rstrip("/")


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, _DOMAIN + payload.encode(), hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
