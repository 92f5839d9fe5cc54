"""HTTP connections as `beacon serve` holds them: read deadlines, an idle timeout, a cap.

uvicorn's httptools protocol waits as long as a client likes for a request to finish and
accepts connections until the process runs out of file descriptors. `BeaconHttpProtocol` adds
one timer per connection, guarding the phase the connection is in:

- idle (connected, or between requests): closed after the keep-alive timeout;
- headers (from a request's first byte): answered 408 and closed after the header timeout;
- body: closed when no body bytes arrive for the body timeout, or the body is still incomplete
  after the total body timeout; the application's `receive` then gives `http.disconnect`;
- awaiting the response: no timer, the application's time is its own.

Over `max_connections` a new connection is answered 503 at once and closed. The timer is
re-armed after a read only when the phase changes, so a request that arrives in one read costs
no timer of its own.
"""

from __future__ import annotations

import asyncio
import functools
import math
import sys
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, cast

import structlog
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from beacon.core import jsonio
from beacon.settings import Settings

log = structlog.get_logger()

# Descriptors a server process needs besides its HTTP connections: the listening socket, the
# database and bus connections, log files and the event loop's own.
RESERVED_FILE_DESCRIPTORS = 100
REFUSAL_LOG_INTERVAL_S = 60.0  # under a flood, one log line a minute says how many were refused


class Phase(Enum):
    """What a connection is waiting for, each with its own deadline."""

    IDLE = "idle"
    HEADERS = "headers"
    BODY = "body"
    RESPONSE = "response"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long a client may take over each part of a request; how many connections a process
    serves at once."""

    header_timeout: float
    body_timeout: float
    body_total_timeout: float
    keepalive_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout=settings.http_header_timeout_seconds,
            body_timeout=settings.http_body_timeout_seconds,
            body_total_timeout=settings.http_body_total_timeout_seconds,
            keepalive_timeout=settings.http_keepalive_timeout_seconds,
            max_connections=settings.http_max_connections,
        )


def http_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The protocol to give uvicorn as `http=`: httptools with `limits` enforced."""
    # uvicorn only calls `http` with keyword arguments to make each connection's protocol, so a
    # partial serves as the class; unlike a class made here it pickles into `--workers` processes.
    return cast("type[asyncio.Protocol]", functools.partial(BeaconHttpProtocol, limits=limits))


def error_response(
    status: int, code: str, message: str, *, headers: list[tuple[bytes, bytes]]
) -> bytes:
    """A complete HTTP/1.1 answer with Beacon's JSON error body that closes the connection."""
    body = jsonio.dumps({"error": {"code": code, "message": message}})
    lines = [STATUS_LINE[status]]
    for name, value in [
        *headers,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]:
        lines.append(name + b": " + value + b"\r\n")
    return b"".join([*lines, b"\r\n", body])


class BeaconHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read deadlines, an idle timeout and a connection cap."""

    _refused_unlogged: ClassVar[int] = 0
    _refusal_logged_at: ClassVar[float] = -math.inf

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        self._parsing = Phase.IDLE  # IDLE between messages, else HEADERS or BODY
        self._messages = 0  # requests begun on this connection: a new one gets a new deadline
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None
        self._guarding: tuple[Phase, int] | None = None  # the phase (and request) the timer is for
        self._phase_started_at = 0.0
        self._body_read_at = 0.0

    # --- connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            self._refuse()
        else:
            self._rearm()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the request is read only so that closing does not reset the 503 away
        super().data_received(data)
        if self._parsing is Phase.BODY:
            self._body_read_at = self.loop.time()
        self._rearm()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._cancel_timer()

    # --- the parser's and the response's progress -------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsing = Phase.HEADERS
        self._messages += 1

    def on_headers_complete(self) -> None:
        self._parsing = Phase.BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._parsing = Phase.IDLE

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn arms its own keep-alive timer here; the IDLE deadline of `_rearm` replaces it.
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        self._rearm()

    # --- deadlines ---------------------------------------------------------------------------

    def _phase(self) -> Phase:
        """What the connection waits for now."""
        if self._parsing is not Phase.IDLE:
            return self._parsing
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            return Phase.RESPONSE
        return Phase.IDLE

    def _rearm(self) -> None:
        """Arm the deadline of the connection's phase, unless it is already armed."""
        if self.transport.is_closing():
            self._cancel_timer()
            return
        phase = self._phase()
        guarding = (phase, self._messages)
        if guarding == self._guarding:
            return
        self._cancel_timer()
        self._guarding = guarding
        self._phase_started_at = self._body_read_at = self.loop.time()
        delay = self._delay(phase)
        if delay is not None:
            self._timer = self.loop.call_later(delay, self._expire)

    def _delay(self, phase: Phase) -> float | None:
        limits = self._limits
        return {
            Phase.IDLE: limits.keepalive_timeout,
            Phase.HEADERS: limits.header_timeout,
            Phase.BODY: min(limits.body_timeout, limits.body_total_timeout),
            Phase.RESPONSE: None,
        }[phase]

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._guarding = None

    def _server_holds_the_request(self) -> bool:
        """Whether Beacon, not the client, is why the request has not moved on: reading is
        paused (a pipelined request waits, or the application has not taken the body yet) or
        the client waits for the 100 Continue the application has not asked for."""
        cycle = self.cycle
        return self.flow.read_paused or (
            cycle is not None and cycle.waiting_for_100_continue and not cycle.response_complete
        )

    def _expire(self) -> None:
        """The phase's deadline passed: close the connection, or wait on if it moved."""
        self._timer = None
        if self._guarding is None or self.transport.is_closing():
            return
        phase, _ = self._guarding
        now = self.loop.time()
        if phase is not Phase.IDLE and self._server_holds_the_request():
            self._body_read_at = now
            self._timer = self.loop.call_later(self._delay(phase) or 0.0, self._expire)
            return
        if phase is Phase.BODY:
            deadline = min(
                self._body_read_at + self._limits.body_timeout,
                self._phase_started_at + self._limits.body_total_timeout,
            )
            if now < deadline:
                self._timer = self.loop.call_later(deadline - now, self._expire)
                return
        if phase is Phase.HEADERS and not self._responding():
            message = f"the request headers took longer than {self._limits.header_timeout:g} s"
            self.transport.write(self._closing_answer(408, "request_timeout", message))
        self.transport.close()

    def _responding(self) -> bool:
        """Whether a response of an earlier request is still being written."""
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    # --- the cap -----------------------------------------------------------------------------

    def _refuse(self) -> None:
        """Answer 503 at once and close: the process serves its maximum of connections."""
        self._refused = True
        self.connections.discard(self)  # a refused connection does not count against the cap
        retry_after = max(1, math.ceil(self._limits.keepalive_timeout))
        message = f"this server holds its maximum of {self._limits.max_connections} connections"
        self.transport.write(
            self._closing_answer(
                503, "too_many_connections", message, (b"retry-after", str(retry_after).encode())
            )
        )
        self._log_refusal()
        if self.transport.can_write_eof():
            # Half-close and read the request away: closing with it unread would reset the
            # connection, and the client could lose the 503 with it.
            self.transport.write_eof()
            self._timer = self.loop.call_later(self._limits.header_timeout, self.transport.close)
        else:
            self.transport.close()

    def _log_refusal(self) -> None:
        cls = type(self)
        cls._refused_unlogged += 1
        now = self.loop.time()
        if now - cls._refusal_logged_at >= REFUSAL_LOG_INTERVAL_S:
            log.warning(
                "http_connections_refused",
                refused=cls._refused_unlogged,
                max_connections=self._limits.max_connections,
            )
            cls._refused_unlogged = 0
            cls._refusal_logged_at = now

    def _closing_answer(
        self, status: int, code: str, message: str, *extra: tuple[bytes, bytes]
    ) -> bytes:
        return error_response(
            status, code, message, headers=[*self.server_state.default_headers, *extra]
        )


def raise_open_file_limit(max_connections: int) -> None:
    """Raise the soft open-file limit towards the hard one, so that the connection cap, not
    the descriptor limit, is what refuses connections; log when the hard limit is too low."""
    if sys.platform == "win32":
        return
    import resource

    wanted = max_connections + RESERVED_FILE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError) as exc:  # e.g. macOS caps the soft limit below the hard
            log.warning("open_file_limit_not_raised", wanted=raised, error=str(exc))
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "http_max_connections_above_open_file_limit",
            max_connections=max_connections,
            open_file_limit=soft,
            hint="lower BEACON_HTTP_MAX_CONNECTIONS or raise the hard limit (ulimit -Hn)",
        )
