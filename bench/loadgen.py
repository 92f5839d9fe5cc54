"""Load generation: virtual clients over raw keep-alive HTTP/1.1, in closed- and open-loop phases.

A `VirtualClient` owns one connection and a `Payload`, which says what to send and how to read
the answer; the phases drive many clients at once and record latencies in a `Recorder`.
No HTTP library: one connection carries at most one request, parsed from its Content-Length,
so the load generator's own CPU stays small next to the server's.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

HOST = "127.0.0.1"
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 10.0
RETRY_PAUSE_S = 0.05


def post_request(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def get_request(port: int, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- a minimal keep-alive HTTP/1.1 client ------------------------------------------------------


class ProtocolError(Exception):
    """The server's response could not be parsed."""


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.sent_at = 0.0
        self.done_at = 0.0
        self.closed = False
        self.timed_out = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self.timed_out:
                waiter.set_exception(TimeoutError(f"no response in {REQUEST_TIMEOUT_S} s"))
            else:
                waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        try:
            status, length = parse_head(bytes(self.buffer[:end]))
        except ProtocolError as exc:
            waiter.set_exception(exc)
            self.abort()
            return
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        self.done_at = time.perf_counter()
        waiter.set_result((status, body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send one request and return its status and body."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.sent_at = time.perf_counter()
        self.transport.write(data)
        return await self.waiter

    def overdue(self, now: float) -> bool:
        waiter = self.waiter
        return waiter is not None and not waiter.done() and now - self.sent_at > REQUEST_TIMEOUT_S

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def parse_head(head: bytes) -> tuple[int, int]:
    """Return the status and Content-Length of a response head."""
    lines = head.split(b"\r\n")
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
        raise ProtocolError(f"bad status line {status_line[:80]!r}")
    try:
        status = int(status_line[9:12])
    except ValueError as exc:
        raise ProtocolError(f"bad status line {status_line[:80]!r}") from exc
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return status, int(value.strip())
            except ValueError as exc:
                raise ProtocolError(f"bad content-length {value[:40]!r}") from exc
    raise ProtocolError("response without content-length")


async def open_connection(port: int) -> HttpConnection:
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(HttpConnection, HOST, port), CONNECT_TIMEOUT_S
    )
    return protocol


async def fetch(port: int, request: bytes) -> tuple[int, bytes]:
    """Send one request on its own connection, within the request timeout."""
    connection = await open_connection(port)
    try:
        return await asyncio.wait_for(connection.request(request), REQUEST_TIMEOUT_S)
    finally:
        connection.close()


# --- virtual clients and measurements ----------------------------------------------------------


class Payload(Protocol):
    """What one virtual client sends, and how it reads the answers."""

    def request(self) -> bytes:
        """Return the next request, head and body."""
        ...

    def answered(self, status: int, body: bytes) -> str | None:
        """Read an answer; return why it is a failure, or None if the request was accepted."""
        ...


class VirtualClient:
    """One client of the server: a keep-alive connection, opened again when it was lost."""

    def __init__(self, port: int, payload: Payload) -> None:
        self.port = port
        self.payload = payload
        self.connection: HttpConnection | None = None

    async def send(self) -> tuple[str | None, float, float]:
        """Send the payload once; return the failure if any, send time and completion time."""
        connection = self.connection
        if connection is None or connection.closed:
            self.connection = connection = await open_connection(self.port)
        status, body = await connection.request(self.payload.request())
        return self.payload.answered(status, body), connection.sent_at, connection.done_at

    def disconnect(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@dataclass
class Recorder:
    """Latencies of accepted requests and the reasons of failed ones, for one phase."""

    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    finished: float = 0.0

    def record(self, failure: str | None, latency_s: float) -> None:
        if failure is None:
            self.ok += 1
            self.latencies.append(latency_s)
        else:
            self.errors[failure] += 1

    @property
    def elapsed(self) -> float:
        return max(self.finished - self.started, 1e-9)

    def percentile_ms(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
        return round(ordered[index] * 1000, 2)


async def watch_timeouts(clients: list[VirtualClient], stop: asyncio.Event) -> None:
    """Abort connections whose request went unanswered for too long (no per-request timers)."""
    while not stop.is_set():
        now = time.perf_counter()
        for client in clients:
            connection = client.connection
            if connection is not None and connection.overdue(now):
                connection.timed_out = True
                connection.abort()
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


async def call(client: VirtualClient, recorder: Recorder, scheduled: float | None) -> None:
    try:
        failure, sent_at, done_at = await client.send()
    except (OSError, TimeoutError, ProtocolError) as exc:
        recorder.errors[type(exc).__name__] += 1
        client.disconnect()
        await asyncio.sleep(RETRY_PAUSE_S)  # a dead server must not turn this into a busy loop
        return
    start = sent_at if scheduled is None else min(scheduled, sent_at)
    recorder.record(failure, done_at - start)


async def run_phase(
    clients: list[VirtualClient], work: Callable[[VirtualClient], Awaitable[None]]
) -> None:
    stop = asyncio.Event()
    watchdog = asyncio.create_task(watch_timeouts(clients, stop))
    try:
        await asyncio.gather(*(work(client) for client in clients))
    finally:
        stop.set()
        await watchdog
        for client in clients:
            client.disconnect()


async def closed_loop(clients: list[VirtualClient], duration: float) -> Recorder:
    """Each client sends its next request as soon as the previous one was answered."""
    recorder = Recorder(started=time.perf_counter())
    deadline = recorder.started + duration

    async def work(client: VirtualClient) -> None:
        while time.perf_counter() < deadline:
            await call(client, recorder, None)

    await run_phase(clients, work)
    recorder.finished = time.perf_counter()
    return recorder


async def open_loop(clients: list[VirtualClient], rate: float, duration: float) -> Recorder:
    """Send `rate` requests/s on a fixed schedule; latency counts from the scheduled time."""
    total = max(1, int(rate * duration))
    interval = 1.0 / rate
    recorder = Recorder(started=time.perf_counter() + 0.05)
    next_index = 0

    async def work(client: VirtualClient) -> None:
        nonlocal next_index
        while next_index < total:
            index = next_index
            next_index += 1
            scheduled = recorder.started + index * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await call(client, recorder, scheduled)

    await run_phase(clients, work)
    recorder.finished = time.perf_counter()
    return recorder
