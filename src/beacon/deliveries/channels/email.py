"""Email over SMTP (plain, STARTTLS or TLS, with or without login), one connection per message.

A message is multipart/alternative when the template has both text and HTML. It carries a
`Message-ID` made from the delivery id (bounces and replies name it), and when it has a
one-click unsubscribe link, `List-Unsubscribe` (mailto, if configured, and https) with
`List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058). A 5xx answer fails the
message for good, a 4xx or a lost connection for now; a refused login too is "for now": it is
a setting to fix, not a bad recipient.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, formataddr
from typing import Any, Literal
from urllib.parse import quote

import aiosmtplib

from beacon.core.clock import Clock
from beacon.deliveries.channels.base import (
    ChannelSpec,
    EmailAddress,
    Recipient,
    SendResult,
    mismatch,
)
from beacon.deliveries.channels.registry import ChannelServices, read_settings, settings_spec
from beacon.deliveries.templates import Rendered

DEFAULT_PORTS = {"plain": 25, "starttls": 587, "tls": 465}
_ID_SAFE = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpSettings:
    """Where and how email leaves: the SMTP relay and the sender."""

    host: str = field(metadata={"doc": "SMTP server host name"})
    from_address: str = field(metadata={"doc": "the sender's address (From)"})
    port: int | None = field(
        default=None, metadata={"doc": "SMTP port; default 25 plain, 587 starttls, 465 tls"}
    )
    security: Literal["plain", "starttls", "tls"] = field(
        default="starttls", metadata={"doc": "plain, starttls (required) or tls (implicit)"}
    )
    username: str | None = field(default=None, metadata={"doc": "SMTP login, if any"})
    password: str | None = field(
        default=None, repr=False, metadata={"doc": "SMTP password", "secret": True}
    )
    from_name: str | None = field(default=None, metadata={"doc": "the sender's display name"})
    unsubscribe_mailto: str | None = field(
        default=None, metadata={"doc": "address for List-Unsubscribe mails, if any"}
    )
    message_id_domain: str | None = field(
        default=None, metadata={"doc": "domain of Message-IDs; default from_address's"}
    )
    ca_file: str | None = field(
        default=None, metadata={"doc": "CA bundle to trust instead of the system's"}
    )
    timeout: float = field(default=30.0, metadata={"doc": "seconds per SMTP step"})

    def __post_init__(self) -> None:
        EmailAddress(self.from_address, self.from_name)
        if self.unsubscribe_mailto is not None:
            EmailAddress(self.unsubscribe_mailto)
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError("port must be 1 to 65535")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")


SPEC = ChannelSpec(
    name="email",
    description="Email through an SMTP relay: multipart HTML and text, one-click unsubscribe",
    kinds=("email",),
    recipient="an email address",
    settings=settings_spec(SmtpSettings),
)


class EmailChannel:
    """Sends email through one SMTP relay."""

    spec = SPEC

    def __init__(self, settings: SmtpSettings, *, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._tls = (
            ssl.create_default_context(cafile=settings.ca_file) if settings.ca_file else None
        )

    def build_message(self, rendered: Rendered, recipient: EmailAddress) -> EmailMessage:
        """Return the message as it will be sent."""
        s = self._settings
        parts = rendered.parts
        message = EmailMessage(policy=SMTP_POLICY)
        message["From"] = formataddr((s.from_name or "", s.from_address))
        message["To"] = formataddr((recipient.name or "", recipient.address))
        message["Subject"] = parts["subject"]
        message["Date"] = format_datetime(self._clock.now())
        domain = s.message_id_domain or s.from_address.rpartition("@")[2]
        message["Message-ID"] = f"<{_id_part(rendered.delivery_id)}@{domain}>"
        unsubscribe = []
        if s.unsubscribe_mailto:
            subject = quote(f"unsubscribe {rendered.delivery_id}")
            unsubscribe.append(f"<mailto:{s.unsubscribe_mailto}?subject={subject}>")
        if rendered.one_click_unsubscribe_url:
            unsubscribe.append(f"<{rendered.one_click_unsubscribe_url}>")
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if unsubscribe:
            message["List-Unsubscribe"] = ", ".join(unsubscribe)
        text, html = parts.get("text", "").strip(), parts.get("html", "").strip()
        if text:
            message.set_content(parts["text"])
            if html:
                message.add_alternative(parts["html"], subtype="html")
        else:
            message.set_content(parts["html"], subtype="html")
        return message

    async def send(self, rendered: Rendered, recipient: Recipient) -> SendResult:
        """Hand the message to the relay; its answer decides the outcome."""
        wrong = mismatch(SPEC, rendered, recipient, EmailAddress)
        if wrong:
            return SendResult.permanent(wrong)
        assert isinstance(recipient, EmailAddress)
        try:
            message = self.build_message(rendered, recipient)
        except (ValueError, KeyError) as error:
            return SendResult.permanent(f"the message cannot be built: {error}")
        s = self._settings
        try:
            _, reply = await aiosmtplib.send(
                message,
                hostname=s.host,
                port=s.port or DEFAULT_PORTS[s.security],
                username=s.username,
                password=s.password,
                use_tls=s.security == "tls",
                start_tls=s.security == "starttls",
                tls_context=self._tls,
                timeout=s.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as refused:
            first = refused.recipients[0]
            return _answered(first.code, first.message)
        except aiosmtplib.SMTPAuthenticationError as error:
            return SendResult.temporary(f"SMTP login refused ({error.code} {error.message})")
        except aiosmtplib.SMTPResponseException as error:
            return _answered(error.code, error.message)
        except (aiosmtplib.SMTPException, OSError) as error:
            return SendResult.temporary(f"SMTP: {type(error).__name__}: {error}")
        return SendResult.accepted(message["Message-ID"], f"SMTP: {reply}")


def create(settings: Mapping[str, Any], services: ChannelServices) -> EmailChannel:
    """Return the email channel the configuration describes."""
    return EmailChannel(
        read_settings(SmtpSettings, settings, channel="email"), clock=services.clock
    )


def _answered(code: int, text: str) -> SendResult:
    description = f"SMTP {code} {text}"
    if 500 <= code < 600:
        return SendResult.permanent(description)
    return SendResult.temporary(description)


def _id_part(delivery_id: str) -> str:
    if _ID_SAFE.fullmatch(delivery_id):
        return delivery_id
    return hashlib.sha256(delivery_id.encode()).hexdigest()[:32]
