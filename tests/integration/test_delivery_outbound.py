"""Outbound HTTP against real local servers: answers kept, internal addresses refused.

`Receiver` (a real aiohttp server on 127.0.0.1) is shared with the other delivery tests.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from aiohttp import web

from beacon.deliveries.outbound import (
    LOOPBACK,
    OutboundFailed,
    OutboundHttp,
    OutboundPolicy,
    OutboundRefused,
    allow_networks,
)

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Received:
    """One request as the receiver got it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A local HTTP server that records requests and answers as told (else 200 "ok")."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.port = 0
        self._answers: deque[Answer] = deque()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(
        self, status: int, body: bytes | str = b"", headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next request with `status`, `body` and `headers`."""
        data = body.encode() if isinstance(body, str) else body

        async def respond(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, body=data, headers=headers)

        self._answers.append(respond)

    def answer_with(self, respond: Answer) -> None:
        """Answer the next request with `respond`."""
        self._answers.append(respond)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Received(request.method, request.path_qs, headers, body))
        if self._answers:
            return await self._answers.popleft()(request)
        return web.Response(text="ok")


@asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    """Start a `Receiver` on a free loopback port for the block."""
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver._handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = runner.addresses[0][1]
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as started:
        yield started


@pytest.fixture
async def outbound() -> AsyncIterator[OutboundHttp]:
    async with OutboundHttp(policy=OutboundPolicy(allow=LOOPBACK)) as client:
        yield client


async def test_a_post_reaches_the_receiver_and_its_answer_is_kept(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    receiver.answer(202, '{"queued": true}', {"X-Request-Id": "r-1"})

    response = await outbound.post(
        receiver.url(), content=b'{"a": 1}', headers={"Content-Type": "application/json"}
    )

    assert (response.status, response.excerpt) == (202, '{"queued": true}')
    assert response.headers["x-request-id"] == "r-1"
    assert response.latency_ms > 0
    assert response.redirects == ()
    [request] = receiver.requests
    assert (request.method, request.path, request.body) == ("POST", "/hook", b'{"a": 1}')
    assert request.headers["content-type"] == "application/json"


async def test_only_the_first_bytes_of_a_long_answer_are_kept(receiver: Receiver) -> None:
    receiver.answer(500, "x" * 100_000)
    policy = OutboundPolicy(allow=LOOPBACK, excerpt_limit=100)
    async with OutboundHttp(policy=policy) as client:
        response = await client.post(receiver.url(), content=b"{}", headers={})

    assert response.status == 500
    assert response.excerpt == "x" * 100


async def test_redirects_are_followed_a_few_times_at_most(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    receiver.answer(307, headers={"Location": "/second"})
    receiver.answer(308, headers={"Location": receiver.url("/third")})

    response = await outbound.post(receiver.url("/first"), content=b"body", headers={})

    assert response.status == 200
    assert response.redirects == (receiver.url("/second"), receiver.url("/third"))
    assert [(r.method, r.path, r.body) for r in receiver.requests] == [
        ("POST", "/first", b"body"),
        ("POST", "/second", b"body"),
        ("POST", "/third", b"body"),
    ]

    for _ in range(4):
        receiver.answer(302, headers={"Location": "/again"})
    with pytest.raises(OutboundRefused, match="more than 3 redirects"):
        await outbound.post(receiver.url(), content=b"", headers={})


async def test_a_303_turns_the_post_into_a_get_without_its_body(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    receiver.answer(303, headers={"Location": "/done"})

    await outbound.post(receiver.url(), content=b"secret body", headers={})

    assert [(r.method, r.body) for r in receiver.requests] == [
        ("POST", b"secret body"),
        ("GET", b""),
    ]


async def test_loopback_is_refused_unless_allowed(receiver: Receiver) -> None:
    async with OutboundHttp() as client:
        with pytest.raises(OutboundRefused, match=r"127\.0\.0\.1 is a loopback address"):
            await client.post(receiver.url(), content=b"{}", headers={})
        with pytest.raises(OutboundRefused, match=r"localhost resolves to .* loopback"):
            await client.post(f"http://localhost:{receiver.port}/", content=b"{}", headers={})

    assert receiver.requests == []


async def test_a_redirect_to_an_address_not_allowed_is_refused(receiver: Receiver) -> None:
    receiver.answer(307, headers={"Location": f"http://127.0.0.2:{receiver.port}/inside"})
    policy = OutboundPolicy(allow=allow_networks(["127.0.0.1/32"]))
    async with OutboundHttp(policy=policy) as client:
        with pytest.raises(OutboundRefused, match=r"127\.0\.0\.2 is a loopback address"):
            await client.post(receiver.url(), content=b"{}", headers={})

    assert [r.path for r in receiver.requests] == ["/hook"]


async def test_a_redirect_to_another_scheme_is_refused(
    receiver: Receiver, outbound: OutboundHttp
) -> None:
    receiver.answer(302, headers={"Location": "file:///etc/passwd"})

    with pytest.raises(OutboundRefused, match="not an absolute http"):
        await outbound.post(receiver.url(), content=b"{}", headers={})


async def test_the_name_is_resolved_once_and_the_checked_address_is_the_one_connected(
    receiver: Receiver,
) -> None:
    looked_up: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return {"hooks.customer.test": ["127.0.0.1"], "evil.test": ["8.8.8.8", "10.0.0.7"]}[host]

    allowed = OutboundHttp(policy=OutboundPolicy(allow=LOOPBACK), resolver=resolve)
    async with allowed as client:
        url = f"http://hooks.customer.test:{receiver.port}/in"
        response = await client.post(url, content=b"{}", headers={})
    async with OutboundHttp(resolver=resolve) as client:
        with pytest.raises(OutboundRefused, match=r"evil\.test resolves to 10\.0\.0\.7"):
            await client.post("http://evil.test/", content=b"{}", headers={})

    assert response.status == 200
    assert receiver.requests[0].headers["host"] == f"hooks.customer.test:{receiver.port}"
    assert looked_up == ["hooks.customer.test", "evil.test"]


async def test_credentials_are_not_carried_to_another_origin(receiver: Receiver) -> None:
    async with running_receiver() as elsewhere:
        receiver.answer(307, headers={"Location": elsewhere.url("/other")})
        async with OutboundHttp(policy=OutboundPolicy(allow=LOOPBACK)) as client:
            await client.post(
                receiver.url(), content=b"{}", headers={"Authorization": "Bearer t0ken"}
            )

        assert receiver.requests[0].headers["authorization"] == "Bearer t0ken"
        assert "authorization" not in elsewhere.requests[0].headers


async def test_no_answer_within_the_time_limit_is_a_temporary_failure(receiver: Receiver) -> None:
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await never.wait()
        return web.Response()

    receiver.answer_with(hang)
    policy = OutboundPolicy(allow=LOOPBACK, timeout=0.2)
    async with OutboundHttp(policy=policy) as client:
        with pytest.raises(OutboundFailed, match=r"no answer within 0.2 s") as failed:
            await client.post(receiver.url(), content=b"{}", headers={})

    assert failed.value.permanent is False
    assert failed.value.latency_ms is not None
    never.set()


async def test_a_closed_port_is_a_temporary_failure(outbound: OutboundHttp) -> None:
    async with running_receiver() as gone:
        url = gone.url()

    with pytest.raises(OutboundFailed) as failed:
        await outbound.post(url, content=b"{}", headers={})

    assert failed.value.permanent is False
    assert "cannot connect to 127.0.0.1" in str(failed.value)


async def test_urls_that_are_not_http_are_refused(outbound: OutboundHttp) -> None:
    for url in ("ftp://example.com/x", "/relative", "http:///no-host", "javascript:alert(1)"):
        with pytest.raises(OutboundRefused, match="not an absolute http"):
            await outbound.post(url, content=b"", headers={})
