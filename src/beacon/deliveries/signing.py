"""Standard Webhooks signatures on outgoing webhooks, with several secrets during a rotation.

Each request carries `webhook-id` (the delivery's id: the same on every retry, so a receiver
can drop repeats), `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`:
`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` for every active secret, separated by
spaces, so a receiver that knows any one of them verifies. Secrets are `whsec_` followed by
base64 of 24 to 64 random bytes, as the specification recommends.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix secrets carry, not a secret)
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


class WebhookSigner:
    """Signs webhook bodies with each active secret of one endpoint."""

    def __init__(self, *, secrets: Sequence[str]) -> None:
        if isinstance(secrets, str) or not secrets:
            raise ValueError("webhook signing needs a list of one or more whsec_ secrets")
        self._signers = tuple(
            Webhook(check_secret(secret, number=number, of=len(secrets)))
            for number, secret in enumerate(secrets, start=1)
        )

    def headers(self, *, webhook_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
        """Return the three Standard Webhooks headers for one attempt of one delivery."""
        if not webhook_id or any(ch in webhook_id for ch in ". \r\n"):
            raise ValueError("a webhook id is non-empty, without dots, spaces or line breaks")
        if timestamp.tzinfo is None:
            raise ValueError("the webhook timestamp must be timezone-aware")
        signatures = " ".join(
            signer.sign(msg_id=webhook_id, timestamp=timestamp, data=body)
            for signer in self._signers
        )
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": signatures,
        }


def new_secret() -> str:
    """Return a fresh endpoint secret in the `whsec_` form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: str, *, number: int = 1, of: int = 1) -> str:
    """Return `secret` if it is a `whsec_` secret of 24 to 64 bytes, else say what is wrong."""
    which = "the webhook secret" if of == 1 else f"webhook secret {number} of {of}"
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"{which} must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{which} is not base64 after {SECRET_PREFIX!r}") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"{which} holds {len(key)} bytes; it needs {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES}"
        )
    return secret
