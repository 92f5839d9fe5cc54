"""`Client`: track from any thread; a background thread sends the events in batches."""

from __future__ import annotations

import atexit
import threading
from datetime import datetime
from time import monotonic
from types import TracebackType
from typing import Any

import httpx

from beacon_sdk.batching import EventQueue, request_body
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

DEFAULT_HOST = "http://127.0.0.1:8686"
SHUTDOWN_TIMEOUT = 10.0  # seconds `shutdown()` (and so the exit hook) waits for delivery
STOP_GRACE = 1.0  # seconds to let the sender notice it must stop


class Client:
    """Send events to Beacon from threaded code without ever waiting on the network.

    `track` checks the event and queues it. A daemon thread sends the queue in batches of up
    to `batch_size` (sooner if `flush_interval` seconds pass), gzip-compressed, retrying network
    errors, 429 and 5xx with `RetryPolicy`. Events that cannot be delivered (a 4xx, retries
    exhausted, dropped from a full queue, the client shut down) are logged and passed to
    `on_error(exc, events)`; nothing is raised into the caller. When `max_queue` events wait,
    tracking another drops the oldest (`QueueFullError`, counted in `dropped`): during an outage
    the newest events are the ones worth keeping. `shutdown` runs at interpreter exit.

    `sync_mode=True` sends each call inline (with the same retries) and returns afterwards.
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
        transport: httpx.BaseTransport | None = None,
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
        self._http = httpx.Client(
            timeout=timeout, transport=transport, headers=self.options.headers
        )
        self._queue = EventQueue(max_queue)
        self._changed = threading.Condition()
        self._flush_to = 0  # send without waiting while events numbered below this are queued
        self._closed = False
        self._stopping = threading.Event()  # set: give up retrying and stop sending
        self._sender: threading.Thread | None = None
        atexit.register(self.shutdown)

    @property
    def dropped(self) -> int:
        """How many events a full queue has dropped."""
        return self._queue.dropped

    def track(
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
        self._enqueue(event)
        return event.id

    def identify(
        self, user_id: str | int, traits: dict[str, Any] | None = None, email: str | None = None
    ) -> str:
        """Send an `identify` event setting the person's traits (and tying their email)."""
        return self.track("identify", user_id=user_id, email=email, traits=traits)

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now; wait until it is delivered or given up, or `timeout` passes.

        Returns whether everything tracked before the call was settled in time.
        """
        if self.options.sync_mode:
            return True
        if threading.current_thread() is self._sender:
            return False  # called from on_error: the sender cannot wait for itself
        with self._changed:
            target = self._queue.next_seq
            self._flush_to = max(self._flush_to, target)
            if len(self._queue) and not self._closed:
                self._start_sender()  # in a forked child the parent's sender is gone
            self._changed.notify_all()
            return self._changed.wait_for(lambda: self._queue.settled(target), timeout)

    def shutdown(self, timeout: float | None = SHUTDOWN_TIMEOUT) -> None:
        """Deliver what is queued, waiting up to `timeout` seconds, then stop for good.

        Whatever is still undelivered then, and anything tracked later, goes to `on_error`.
        """
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
        atexit.unregister(self.shutdown)
        sender = self._sender
        if sender is not None and sender is not threading.current_thread():
            sender.join(timeout)
        self._stopping.set()
        if sender is not None and sender is not threading.current_thread():
            sender.join(STOP_GRACE)
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    # --- sending ---------------------------------------------------------------------------

    def _enqueue(self, event: Event) -> None:
        on_error = self.options.on_error
        if self.options.sync_mode:
            if self._closed:
                report(on_error, DeliveryError("the client is shut down", attempts=0), [event])
            else:
                self._send([event])
            return
        with self._changed:
            closed = self._closed
            dropped = None if closed else self._queue.put(event)
            if not closed:
                self._start_sender()
                self._changed.notify_all()
            count = self._queue.dropped
        if closed:
            report(on_error, DeliveryError("the client is shut down", attempts=0), [event])
        elif dropped is not None:
            full = QueueFullError(f"the queue is full ({self.options.max_queue} events)")
            report(on_error, full, [dropped], quiet=count % 1000 != 1)  # log now and then

    def _start_sender(self) -> None:
        if self._sender is None or not self._sender.is_alive():
            self._sender = threading.Thread(target=self._run, name="beacon-sdk", daemon=True)
            self._sender.start()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._send(batch)
            except Exception as exc:  # the sender must outlive any surprise
                report(self.options.on_error, exc, batch)
            finally:
                with self._changed:
                    self._queue.done()
                    self._changed.notify_all()
        with self._changed:
            left = self._queue.drain()
            self._changed.notify_all()
        report(self.options.on_error, DeliveryError("shut down first", attempts=0), left)

    def _next_batch(self) -> list[Event] | None:
        """Wait until a batch is due (full, flushed, timed out or closing); None to stop."""
        size = self.options.batch_size
        due: float | None = None
        with self._changed:
            while not self._stopping.is_set():
                oldest = self._queue.oldest_seq()
                if oldest is None:
                    if self._closed:
                        return None
                    due = None
                    self._changed.wait()
                    continue
                now = monotonic()
                due = due or now + self.options.flush_interval
                wanted = oldest < self._flush_to or self._closed
                if wanted or len(self._queue) >= size or now >= due:
                    return self._queue.take(size)
                self._changed.wait(due - now)
        return None

    def _send(self, events: list[Event]) -> None:
        """Send one batch, retrying as the policy says; report it if it is not delivered."""
        body, headers = request_body(events, compress=self.options.gzip)
        retry = self.options.retry
        for attempt in range(retry.max_retries + 1):
            verdict = self._attempt(body, headers)
            if verdict.delivered:
                return
            if not verdict.retryable or attempt == retry.max_retries:
                report(self.options.on_error, give_up(verdict, attempt + 1), events)
                return
            if self._stopping.wait(retry.delay(attempt, verdict.retry_after)):
                stopped = DeliveryError(
                    "the client shut down before the batch was delivered",
                    attempts=attempt + 1,
                    status=verdict.status,
                )
                report(self.options.on_error, stopped, events)
                return

    def _attempt(self, body: bytes, headers: dict[str, str]) -> Verdict:
        try:
            response = self._http.post(self.options.url, content=body, headers=headers)
        except Exception as exc:  # network errors above all; none may reach the host app
            return judge_exception(exc)
        return judge_response(response)
