"""What the messaging tests share: a real SMTP server (aiosmtpd, on this event loop) that can
hold messages, and a driver speaking messaging's public API (templates, messages, sends, the
delivery log, webhook endpoints, system events) with waits that poll it.

The eSputnik reference's fields (`ESPUTNIK_FIELDS`) are checked on every element a receiver
got, after its Standard Webhooks signature verified with the `standardwebhooks` package.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import httpx
import orjson
from aiohttp import web
from aiosmtpd.smtp import SMTP
from standardwebhooks.webhooks import Webhook

from tests.integration.test_delivery_outbound import Receiver

DEADLINE_S = 60.0
ESPUTNIK_FIELDS: dict[str, type | tuple[type, ...]] = {
    "contactId": int,
    "email": str,
    "activityStatus": str,
    "messageId": int,
    "messageInstanceId": int,
    "messageTag": (str, type(None)),
    "activityDateTime": str,
    "viewMessageLink": (str, type(None)),
    "clickEventLink": (str, type(None)),
}


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, what: str, deadline_s: float = DEADLINE_S
) -> None:
    """Poll `check` until it holds; fail after `deadline_s` seconds."""
    deadline = time.monotonic() + deadline_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {deadline_s}s waiting for {what}"
        await asyncio.sleep(0.02)


@dataclass
class Mailbox:
    """What the SMTP server took (a message counts once the server said 250), replies given
    to chosen recipients, and a switch that makes it hold every message until released, then
    refuse it (451)."""

    port: int = 0
    received: list[EmailMessage] = field(default_factory=list)
    holding: bool = False
    held: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)
    refuse: dict[str, list[str]] = field(default_factory=dict)  # recipient → replies to give

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        replies = self.refuse.get(address)
        if replies:
            return replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if self.holding:
            self.held += 1
            await self.released.wait()
            return "451 4.3.0 not taken: the sender went away"
        message = message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.received.append(message)
        return "250 2.0.0 Ok: queued"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.received if m["To"] and address in str(m["To"])]


@asynccontextmanager
async def smtp_mailbox() -> AsyncIterator[Mailbox]:
    """Run aiosmtpd on a free loopback port of this event loop."""
    mailbox = Mailbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(mailbox, hostname="mx.example.com", loop=loop), "127.0.0.1", 0
    )
    mailbox.port = server.sockets[0].getsockname()[1]
    try:
        yield mailbox
    finally:
        mailbox.released.set()
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def receiver_on(port: int, receiver: Receiver | None = None) -> AsyncIterator[Receiver]:
    """Run a `Receiver` (a new one, or one that ran before) on the loopback port `port`."""
    receiver = receiver or Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver._handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    receiver.port = port
    try:
        yield receiver
    finally:
        await runner.cleanup()


def smtp_settings(port: int) -> dict[str, Any]:
    """The email channel's settings for a plain SMTP server on loopback."""
    return {
        "host": "127.0.0.1",
        "port": port,
        "security": "plain",
        "from_address": "shop@example.com",
        "from_name": "Shop",
        "timeout": 10,
    }


def html_part(message: EmailMessage) -> str:
    """The HTML alternative of a received email."""
    for part in message.walk():
        if part.get_content_type() == "text/html":
            assert isinstance(part, EmailMessage)
            content = part.get_content()
            assert isinstance(content, str)
            return content
    raise AssertionError("the message has no HTML part")


def verified_elements(receiver: Receiver, secret: str) -> list[tuple[str, dict[str, Any]]]:
    """Every element the receiver got, with the `webhook-id` it came under; each request's
    signature is verified with the `standardwebhooks` package first."""
    verifier = Webhook(secret)
    elements: list[tuple[str, dict[str, Any]]] = []
    for request in receiver.requests:
        verifier.verify(request.body, dict(request.headers))
        body = orjson.loads(request.body)
        assert isinstance(body, list), body
        elements.extend((request.headers["webhook-id"], element) for element in body)
    return elements


def check_esputnik(element: dict[str, Any]) -> None:
    """Fail unless `element` has exactly the reference's fields with their types."""
    expected = set(ESPUTNIK_FIELDS) | (
        {"statusDescription"} if element["activityStatus"] == "UNDELIVERED" else set()
    )
    assert set(element) == expected, element
    for name, kind in ESPUTNIK_FIELDS.items():
        assert isinstance(element[name], kind), (name, element)
    assert not isinstance(element["contactId"], bool)
    if element["activityStatus"] == "CLICKED":
        assert isinstance(element["clickEventLink"], str)


@dataclass
class MessagingDriver:
    """Messaging's admin API, as a back-end or an operator uses it."""

    client: httpx.AsyncClient
    admin: dict[str, str]

    async def call(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        headers = {**self.admin, **kw.pop("headers", {})}
        response = await self.client.request(method, path, headers=headers, **kw)
        assert response.status_code == expect, f"{method} {path}: {response.text}"
        return response.json() if response.content else None

    async def message(self, name: str, content: dict[str, Any], **fields: Any) -> int:
        """Save the template `name` and a message sending it on its first channel."""
        await self.call("PUT", f"/api/templates/{name}", json={"content": content})
        channel = fields.pop("channel", next(iter(content)))
        created = await self.call(
            "POST",
            "/api/messages",
            201,
            json={"template": name, "channel": channel, **fields},
        )
        return int(created["id"])

    async def send(self, message_id: int, to: dict[str, str], **fields: Any) -> str:
        sent = await self.call(
            "POST", f"/api/messages/{message_id}/send", 202, json={"to": to, **fields}
        )
        return str(sent["delivery_id"])

    async def deliveries(self, **filters: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params = {"limit": 1000, **filters}
        while True:
            page = await self.call("GET", "/api/deliveries", params=params)
            items.extend(page["items"])
            if page["next_cursor"] is None:
                return items
            params["cursor"] = page["next_cursor"]

    async def delivery(self, delivery_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.call("GET", f"/api/deliveries/{delivery_id}")
        return found

    async def settled(self, delivery_id: str, *statuses: str) -> dict[str, Any]:
        """Wait until the delivery's status is one of `statuses` (default: any final one)."""
        wanted = statuses or ("sent", "failed", "dead", "skipped", "bounced")
        found: dict[str, Any] = {}

        async def check() -> bool:
            found.update(await self.delivery(delivery_id))
            return found["status"] in wanted

        await wait_until(check, what=f"delivery {delivery_id} to be {' or '.join(wanted)}")
        return found

    async def system_events(self, type: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"source_id": "system", "limit": 1000}
        if type is not None:
            params["type"] = type
        items: list[dict[str, Any]] = []
        while True:
            page = await self.call("GET", "/api/events", params=params)
            items.extend(page["items"])
            if page["next_cursor"] is None:
                return items
            params["cursor"] = page["next_cursor"]

    async def endpoint(self, url: str, **fields: Any) -> tuple[str, str]:
        """Create a webhook endpoint; return its id and secret."""
        created = await self.call("POST", "/api/webhooks", 201, json={"url": url, **fields})
        return str(created["id"]), str(created["secret"])

    async def advance(self, seconds: float) -> dict[str, Any]:
        moved: dict[str, Any] = await self.call(
            "POST", "/api/clock/advance", json={"seconds": seconds}, timeout=120
        )
        return moved
