"""`AsyncClient`: `Client` for asyncio; `await track(...)` only queues, a task sends."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any, Unpack

import httpx

from beacon_sdk.base import SHUTDOWN_TIMEOUT, STOP_GRACE, BaseClient
from beacon_sdk.delivery import Delivery, Verdict, judge_exception, judge_response
from beacon_sdk.errors import DeliveryError
from beacon_sdk.event import Event, EventFields, build_event


class AsyncClient(BaseClient[httpx.AsyncBaseTransport]):
    """Send events to Beacon from asyncio code; the same behaviour and options as `Client`.

    A background task, started by the first `track`, sends the batches. There is no exit
    hook (the event loop is gone by then): close the client with `aclose()` or `async with`.
    """

    _http: httpx.AsyncClient
    _changed: asyncio.Condition
    _stopping: asyncio.Event  # set: give up retrying and stop sending
    _sender: asyncio.Task[None] | None

    def _open(self, transport: httpx.AsyncBaseTransport | None) -> None:
        self._http = httpx.AsyncClient(
            timeout=self.options.timeout, transport=transport, headers=self.options.headers
        )
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._sender = None

    async def track(self, event_type: str, **fields: Unpack[EventFields]) -> str:
        """Queue an event about a person and return its id (raises only for unsendable input).

        `fields` are `Client.track`'s: the person, and `properties`, `context`, `traits`, ...
        """
        event = build_event(event_type, **fields)
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
            target = self._request_flush()
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
        if self._closed:
            self._report_closed(event)
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
            self._report_dropped(dropped, self._queue.dropped)

    async def _run(self) -> None:
        while (batch := await self._next_batch()) is not None:
            try:
                await self._send(batch)
            except asyncio.CancelledError:
                self._report(DeliveryError("cancelled", attempts=0), batch)
                self._settle_and_drain()
                raise
            except Exception as exc:  # the sender must outlive any surprise
                self._report(exc, batch)
            async with self._changed:
                self._queue.done()
                self._changed.notify_all()
        self._settle_and_drain()
        async with self._changed:
            self._changed.notify_all()

    def _settle_and_drain(self) -> None:
        self._queue.done()
        self._report_unsent(self._queue.drain())

    async def _next_batch(self) -> list[Event] | None:
        """Wait until a batch is due (full, flushed, timed out or closing); None to stop."""
        async with self._changed:
            while not (self._stopping.is_set() or self._drained):
                if batch := self._due_batch():
                    return batch
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._until_due()):
                        await self._changed.wait()
        return None

    async def _send(self, events: list[Event]) -> None:
        """Send one batch, retrying as the policy says; report it if it is not delivered."""
        delivery = self._delivery(events)
        while (wait := delivery.next_wait(await self._attempt(delivery))) is not None:
            if await self._stopped_within(wait):
                delivery.stop()
                return

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return False
        return True

    async def _attempt(self, delivery: Delivery) -> Verdict:
        try:
            response = await self._http.post(
                self.options.url, content=delivery.body, headers=delivery.headers
            )
        except Exception as exc:  # network errors above all; none may reach the host app
            return judge_exception(exc)
        return judge_response(response)
