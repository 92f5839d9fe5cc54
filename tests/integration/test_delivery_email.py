"""Email through a real SMTP server (aiosmtpd) the test starts: plain, STARTTLS with login, TLS."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from beacon.core.clock import FrozenClock
from beacon.deliveries.channels.base import EmailAddress, Outcome
from beacon.deliveries.channels.email import EmailChannel, SmtpSettings
from beacon.deliveries.templates import Rendered

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MESSAGE = Rendered(
    channel="email",
    parts={
        "subject": "Your kettle is back — 10% off",
        "html": "<p>Hi Ann, <a href='https://shop.test/kettle'>see it</a></p>",
        "text": "Hi Ann, see it: https://shop.test/kettle",
    },
    delivery_id="0195a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    one_click_unsubscribe_url="https://links.shop.test/m/unsubscribe-one-click/t0k",
)
ANN = EmailAddress("ann@example.com", "Ann Shevchenko")


@dataclass
class Inbox:
    """What the SMTP server received, and how it answers recipients."""

    port: int = 0
    received: list[tuple[str, list[str], Message]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    tls_used: list[bool] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("gone@"):
            return "550 5.1.1 <gone@example.com>: mailbox unavailable"
        if address.startswith("busy@"):
            return "451 4.3.2 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=default_policy)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        assert server.transport is not None
        self.tls_used.append(server.transport.get_extra_info("ssl_object") is not None)
        return "250 2.0.0 Ok: queued as 7F3A2"

    def authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login = (data.login.decode(), data.password.decode())
        self.logins.append(login)
        # handled=False: aiosmtpd answers the refusal (535) itself.
        return AuthResult(success=login == ("beacon", "s3cret"), handled=False)


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    server: ssl.SSLContext


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA and a certificate for 127.0.0.1 it signed, made for this test run."""
    folder = tmp_path_factory.mktemp("smtp-tls")
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Beacon test CA")])
    start, end = datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(days=1)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return Certificates(ca_file, server)


@asynccontextmanager
async def smtp_server(
    *, starttls: ssl.SSLContext | None = None, implicit_tls: ssl.SSLContext | None = None
) -> AsyncIterator[Inbox]:
    """Run aiosmtpd on a free loopback port of this event loop."""
    inbox = Inbox()
    loop = asyncio.get_running_loop()

    def protocol() -> SMTP:
        return SMTP(
            inbox,
            hostname="mx.example.com",
            tls_context=starttls,
            require_starttls=starttls is not None,
            authenticator=inbox.authenticate,
            auth_require_tls=True,
            loop=loop,
        )

    server = await loop.create_server(protocol, "127.0.0.1", 0, ssl=implicit_tls)
    inbox.port = server.sockets[0].getsockname()[1]
    try:
        yield inbox
    finally:
        server.close()
        await server.wait_closed()


def channel(port: int, **settings: Any) -> EmailChannel:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "plain",
        "from_address": "news@shop.test",
        "from_name": "Shop News",
        "unsubscribe_mailto": "unsubscribe@shop.test",
    }
    return EmailChannel(SmtpSettings(**{**base, **settings}), clock=FrozenClock(NOW))


async def test_a_multipart_message_arrives_with_its_headers() -> None:
    async with smtp_server() as inbox:
        result = await channel(inbox.port).send(MESSAGE, ANN)

    assert result.outcome is Outcome.ACCEPTED
    assert result.provider_id == "<0195a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b@shop.test>"
    assert "queued as 7F3A2" in result.description
    [(sender, recipients, message)] = inbox.received
    assert (sender, recipients) == ("news@shop.test", ["ann@example.com"])
    assert message["From"] == "Shop News <news@shop.test>"
    assert message["To"] == "Ann Shevchenko <ann@example.com>"
    assert message["Subject"] == "Your kettle is back — 10% off"
    assert message["Message-ID"] == result.provider_id
    assert message["Date"] == "Sat, 01 Mar 2025 12:00:00 +0000"
    assert message["List-Unsubscribe"] == (
        "<mailto:unsubscribe@shop.test?subject=unsubscribe%200195a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b>,"
        " <https://links.shop.test/m/unsubscribe-one-click/t0k>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()  # type: ignore[attr-defined]
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert text.get_content().strip() == "Hi Ann, see it: https://shop.test/kettle"
    assert html.get_content().strip() == MESSAGE.parts["html"]


async def test_an_html_only_message_without_unsubscribe_links_has_neither_header() -> None:
    html_only = Rendered(
        channel="email", parts={"subject": "Receipt", "html": "<p>Thanks</p>"}, delivery_id="d-2"
    )
    async with smtp_server() as inbox:
        result = await channel(inbox.port, unsubscribe_mailto=None).send(html_only, ANN)

    assert result.outcome is Outcome.ACCEPTED
    [(_, _, message)] = inbox.received
    assert message.get_content_type() == "text/html"
    assert message["List-Unsubscribe"] is None
    assert message["List-Unsubscribe-Post"] is None


async def test_starttls_with_a_login(certificates: Certificates) -> None:
    async with smtp_server(starttls=certificates.server) as inbox:
        sent = await channel(
            inbox.port,
            security="starttls",
            username="beacon",
            password="s3cret",
            ca_file=str(certificates.ca_file),
        ).send(MESSAGE, ANN)
        refused = await channel(
            inbox.port,
            security="starttls",
            username="beacon",
            password="wrong",
            ca_file=str(certificates.ca_file),
        ).send(MESSAGE, ANN)

    assert sent.outcome is Outcome.ACCEPTED
    # aiosmtplib tries each mechanism the server offers before it gives up on a login.
    assert inbox.logins[0] == ("beacon", "s3cret")
    assert set(inbox.logins[1:]) == {("beacon", "wrong")}
    assert inbox.tls_used == [True]
    assert refused.outcome is Outcome.FAILED_TEMPORARY
    assert refused.description.startswith("SMTP login refused (535")


async def test_implicit_tls(certificates: Certificates) -> None:
    async with smtp_server(implicit_tls=certificates.server) as inbox:
        sent = await channel(inbox.port, security="tls", ca_file=str(certificates.ca_file)).send(
            MESSAGE, ANN
        )
        untrusted = await channel(inbox.port, security="tls").send(MESSAGE, ANN)

    assert sent.outcome is Outcome.ACCEPTED
    assert inbox.tls_used == [True]
    assert untrusted.outcome is Outcome.FAILED_TEMPORARY
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.description


async def test_a_5xx_answer_fails_for_good_and_a_4xx_for_now() -> None:
    async with smtp_server() as inbox:
        gone = await channel(inbox.port).send(MESSAGE, EmailAddress("gone@example.com"))
        busy = await channel(inbox.port).send(MESSAGE, EmailAddress("busy@example.com"))

    assert gone.outcome is Outcome.FAILED_PERMANENT
    assert gone.description == "SMTP 550 5.1.1 <gone@example.com>: mailbox unavailable"
    assert busy.outcome is Outcome.FAILED_TEMPORARY
    assert busy.description == "SMTP 451 4.3.2 try again later"
    assert inbox.received == []


async def test_no_server_is_a_temporary_failure() -> None:
    async with smtp_server() as inbox:
        port = inbox.port

    result = await channel(port).send(MESSAGE, ANN)

    assert result.outcome is Outcome.FAILED_TEMPORARY
    assert result.description.startswith("SMTP: SMTPConnectError")


async def test_starttls_required_by_us_but_not_offered_is_a_temporary_failure() -> None:
    async with smtp_server() as inbox:
        result = await channel(inbox.port, security="starttls").send(MESSAGE, ANN)

    assert result.outcome is Outcome.FAILED_TEMPORARY
    assert "STARTTLS" in result.description
    assert inbox.received == []
