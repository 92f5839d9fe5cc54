"""`Client`: track from any thread; a background thread sends the events in batches."""

from __future__ import annotations

import atexit
import threading
from types import TracebackType
from typing import Any, Unpack

import httpx

from beacon_sdk.base import SHUTDOWN_TIMEOUT, STOP_GRACE, BaseClient
from beacon_sdk.delivery import Delivery, Verdict, judge_exception, judge_response
from beacon_sdk.event import Event, EventFields, build_event


class Client(BaseClient[httpx.BaseTransport]):
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

    _http: httpx.Client
    _changed: threading.Condition
    _stopping: threading.Event  # set: give up retrying and stop sending
    _sender: threading.Thread | None

    def _open(self, transport: httpx.BaseTransport | None) -> None:
        self._http = httpx.Client(
            timeout=self.options.timeout, transport=transport, headers=self.options.headers
        )
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._sender = None
        atexit.register(self.shutdown)

    def track(self, event_type: str, **fields: Unpack[EventFields]) -> str:
        """Queue an event about a person and return its id (raises only for unsendable input).

        `fields` name the person (`user_id`, `email`, `anonymous_id` or `profile_id`) and may
        add `properties`, `context`, `traits`, `time` and `event_id` (see `EventFields`).
        """
        event = build_event(event_type, **fields)
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
            target = self._request_flush()
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
        if self.options.sync_mode:
            if self._closed:
                self._report_closed(event)
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
            self._report_closed(event)
        elif dropped is not None:
            self._report_dropped(dropped, count)

    def _start_sender(self) -> None:
        if self._sender is None or not self._sender.is_alive():
            self._sender = threading.Thread(target=self._run, name="beacon-sdk", daemon=True)
            self._sender.start()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._send(batch)
            except Exception as exc:  # the sender must outlive any surprise
                self._report(exc, batch)
            finally:
                with self._changed:
                    self._queue.done()
                    self._changed.notify_all()
        with self._changed:
            left = self._queue.drain()
            self._changed.notify_all()
        self._report_unsent(left)

    def _next_batch(self) -> list[Event] | None:
        """Wait until a batch is due (full, flushed, timed out or closing); None to stop."""
        with self._changed:
            while not (self._stopping.is_set() or self._drained):
                if batch := self._due_batch():
                    return batch
                self._changed.wait(self._until_due())
        return None

    def _send(self, events: list[Event]) -> None:
        """Send one batch, retrying as the policy says; report it if it is not delivered."""
        delivery = self._delivery(events)
        while (wait := delivery.next_wait(self._attempt(delivery))) is not None:
            if self._stopping.wait(wait):
                delivery.stop()
                return

    def _attempt(self, delivery: Delivery) -> Verdict:
        try:
            response = self._http.post(
                self.options.url, content=delivery.body, headers=delivery.headers
            )
        except Exception as exc:  # network errors above all; none may reach the host app
            return judge_exception(exc)
        return judge_response(response)
