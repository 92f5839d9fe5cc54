"""`AsyncClient`: `Client` for asyncio; `await track(...)` only queues, a task sends."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from time import monotonic
from types import TracebackType
from typing import Any

import httpx

from beacon_sdk.batching import EventQueue, request_body
from beacon_sdk.client import DEFAULT_HOST, SHUTDOWN_TIMEOUT, STOP_GRACE
from beacon_sdk.delivery import (
    OnError,
    Verdict,
    give_up,
    judge_exception,
    judge_response,
    report,
)
from beacon_sdk.errors import DeliveryError, QueueFullError
from beacon_sdk.event import Event, build_event
from beacon_sdk.options import Options
from beacon_sdk.retry import RetryPolicy


class AsyncClient:
    """Send events to Beacon from asyncio code; the same behaviour and options as `Client`.

    A background task, started by the first `track`, sends the batches. There is no exit
    hook (the event loop is gone by then): close the client with `aclose()` or `async with`.
    """

    def __init__(
        self,
        write_key: str,
        host: str = DEFAULT_HOST,
        *,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        timeout: float = 10.0,
        max_retries: int = 8,
        gzip: bool = True,
        on_error: OnError | None = None,
        sync_mode: bool = False,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        retry = RetryPolicy(max_retries=max_retries, base=backoff_base, cap=backoff_cap)
        self.options = Options(
            write_key=write_key,
            host=host,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_queue=max_queue,
            timeout=timeout,
            retry=retry,
            gzip=gzip,
            on_error=on_error,
            sync_mode=sync_mode,
        )
        self._http = httpx.AsyncClient(
            timeout=timeout, transport=transport, headers=self.options.headers
        )
        self._queue = EventQueue(max_queue)
        self._changed = asyncio.Condition()
        self._flush_to = 0  # send without waiting while events numbered below this are queued
        self._closed = False
        self._stopping = asyncio.Event()  # set: give up retrying and stop sending
        self._sender: asyncio.Task[None] | None = None

    @property
    def dropped(self) -> int:
        """How many events a full queue has dropped."""
        return self._queue.dropped

    async def track(
        self,
        event_type: str,
        *,
        user_id: str | int | None = None,
        email: str | None = None,
        anonymous_id: str | None = None,
        profile_id: str | None = None,
        properties: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        traits: dict[str, Any] | None = None,
        time: datetime | None = None,
        event_id: str | None = None,
    ) -> str:
        """Queue an event about a person and return its id (raises only for unsendable input)."""
        event = build_event(
            event_type,
            user_id=user_id,
            email=email,
            anonymous_id=anonymous_id,
            profile_id=profile_id,
            properties=properties,
            context=context,
            traits=traits,
            time=time,
            event_id=event_id,
        )
        await self._enqueue(event)
        return event.id

    async def identify(
        self, user_id: str | int, traits: dict[str, Any] | None = None, email: str | None = None
    ) -> str:
        """Send an `identify` event setting the person's traits (and tying their email)."""
        return await self.track("identify", user_id=user_id, email=email, traits=traits)

    async def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now; wait until it is delivered or given up, or `timeout` passes.

        Returns whether everything tracked before the call was settled in time.
        """
        if self.options.sync_mode:
            return True
        if self._sender is not None and asyncio.current_task() is self._sender:
            return False  # called from on_error: the sender cannot wait for itself
        async with self._changed:
            target = self._queue.next_seq
            self._flush_to = max(self._flush_to, target)
            self._changed.notify_all()
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait_for(lambda: self._queue.settled(target))
            except TimeoutError:
                return False
            return True

    async def aclose(self, timeout: float | None = SHUTDOWN_TIMEOUT) -> None:
        """Deliver what is queued, waiting up to `timeout` seconds, then stop for good.

        Whatever is still undelivered then, and anything tracked later, goes to `on_error`.
        """
        async with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
        sender = self._sender
        if sender is not None and sender is not asyncio.current_task():
            await asyncio.wait({sender}, timeout=timeout)
            self._stopping.set()
            await asyncio.wait({sender}, timeout=STOP_GRACE)
            if not sender.done():  # stuck in a request: cancelling reports its batch
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
        self._stopping.set()
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- sending ---------------------------------------------------------------------------

    async def _enqueue(self, event: Event) -> None:
        on_error = self.options.on_error
        if self._closed:
            report(on_error, DeliveryError("the client is shut down", attempts=0), [event])
            return
        if self.options.sync_mode:
            await self._send([event])
            return
        async with self._changed:
            dropped = self._queue.put(event)
            if self._sender is None or self._sender.done():
                self._sender = asyncio.get_running_loop().create_task(self._run())
            self._changed.notify_all()
        if dropped is not None:
            full = QueueFullError(f"the queue is full ({self.options.max_queue} events)")
            report(on_error, full, [dropped], quiet=self._queue.dropped % 1000 != 1)

    async def _run(self) -> None:
        while (batch := await self._next_batch()) is not None:
            try:
                await self._send(batch)
            except asyncio.CancelledError:
                report(self.options.on_error, DeliveryError("cancelled", attempts=0), batch)
                self._settle_and_drain()
                raise
            except Exception as exc:  # the sender must outlive any surprise
                report(self.options.on_error, exc, batch)
            async with self._changed:
                self._queue.done()
                self._changed.notify_all()
        self._settle_and_drain()
        async with self._changed:
            self._changed.notify_all()

    def _settle_and_drain(self) -> None:
        self._queue.done()
        left = self._queue.drain()
        report(self.options.on_error, DeliveryError("shut down first", attempts=0), left)

    async def _next_batch(self) -> list[Event] | None:
        """Wait until a batch is due (full, flushed, timed out or closing); None to stop."""
        size = self.options.batch_size
        due: float | None = None
        async with self._changed:
            while not self._stopping.is_set():
                oldest = self._queue.oldest_seq()
                if oldest is None:
                    if self._closed:
                        return None
                    due = None
                    await self._changed.wait()
                    continue
                now = monotonic()
                due = due or now + self.options.flush_interval
                wanted = oldest < self._flush_to or self._closed
                if wanted or len(self._queue) >= size or now >= due:
                    return self._queue.take(size)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due - now):
                        await self._changed.wait()
        return None

    async def _send(self, events: list[Event]) -> None:
        """Send one batch, retrying as the policy says; report it if it is not delivered."""
        body, headers = request_body(events, compress=self.options.gzip)
        retry = self.options.retry
        for attempt in range(retry.max_retries + 1):
            verdict = await self._attempt(body, headers)
            if verdict.delivered:
                return
            if not verdict.retryable or attempt == retry.max_retries:
                report(self.options.on_error, give_up(verdict, attempt + 1), events)
                return
            if await self._stopped_within(retry.delay(attempt, verdict.retry_after)):
                stopped = DeliveryError(
                    "the client shut down before the batch was delivered",
                    attempts=attempt + 1,
                    status=verdict.status,
                )
                report(self.options.on_error, stopped, events)
                return

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return False
        return True

    async def _attempt(self, body: bytes, headers: dict[str, str]) -> Verdict:
        try:
            response = await self._http.post(self.options.url, content=body, headers=headers)
        except Exception as exc:  # network errors above all; none may reach the host app
            return judge_exception(exc)
        return judge_response(response)
