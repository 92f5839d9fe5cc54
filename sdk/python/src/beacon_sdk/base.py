"""`BaseClient`: what `Client` and `AsyncClient` share, none of it I/O.

The options, the queue and when a batch of it is due, and what is reported to `on_error` live
here; each client adds its transport, its lock and its sender (a thread, or an asyncio task).
Methods that read or change the queue are called with the client's lock held.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from time import monotonic
from typing import Generic, TypeVar

from beacon_sdk.batching import EventQueue
from beacon_sdk.delivery import Delivery, OnError, report
from beacon_sdk.errors import DeliveryError, QueueFullError
from beacon_sdk.event import Event
from beacon_sdk.options import Options
from beacon_sdk.retry import RetryPolicy

DEFAULT_HOST = "http://127.0.0.1:8686"
SHUTDOWN_TIMEOUT = 10.0  # seconds closing the client (and so the exit hook) waits for delivery
STOP_GRACE = 1.0  # seconds to let the sender notice it must stop
DROP_LOG_EVERY = 1000  # log one in this many events a full queue drops: an outage drops many

TransportT = TypeVar("TransportT")


class BaseClient(ABC, Generic[TransportT]):
    """The options and queue of a client sending over an httpx transport of type `TransportT`."""

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
        transport: TransportT | None = None,
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
        self._queue = EventQueue(max_queue)
        self._flush_to = 0  # send without waiting while events numbered below this are queued
        self._due: float | None = None  # when the oldest queued event must be sent
        self._closed = False
        self._open(transport)

    @abstractmethod
    def _open(self, transport: TransportT | None) -> None:
        """Make the HTTP client, the lock guarding the queue and the sender's stop signal."""

    @property
    def dropped(self) -> int:
        """How many events a full queue has dropped."""
        return self._queue.dropped

    # --- the queue (lock held) -------------------------------------------------------------

    def _request_flush(self) -> int:
        """Have everything tracked so far sent now; return the sequence number to wait for."""
        target = self._queue.next_seq
        self._flush_to = max(self._flush_to, target)
        return target

    @property
    def _drained(self) -> bool:
        """Whether the client is closed and nothing is left to send."""
        return self._closed and not self._queue

    def _due_batch(self) -> list[Event]:
        """Take the batch that is due (full, flushed, timed out or closing); [] if none is."""
        oldest = self._queue.oldest_seq()
        if oldest is None:
            self._due = None
            return []
        now = monotonic()
        self._due = self._due or now + self.options.flush_interval
        wanted = oldest < self._flush_to or self._closed
        if wanted or len(self._queue) >= self.options.batch_size or now >= self._due:
            self._due = None
            return self._queue.take(self.options.batch_size)
        return []

    def _until_due(self) -> float | None:
        """Return the seconds until a batch is due; None while there is nothing to send."""
        return None if self._due is None else max(self._due - monotonic(), 0.0)

    # --- what is not delivered -------------------------------------------------------------

    def _delivery(self, events: list[Event]) -> Delivery:
        options = self.options
        return Delivery(
            events, retry=options.retry, on_error=options.on_error, compress=options.gzip
        )

    def _report(self, error: Exception, events: list[Event]) -> None:
        report(self.options.on_error, error, events)

    def _report_closed(self, event: Event) -> None:
        """Report an event tracked after the client was closed."""
        self._report(DeliveryError("the client is shut down", attempts=0), [event])

    def _report_dropped(self, event: Event, dropped: int) -> None:
        """Report the oldest event, dropped from the full queue; `dropped` counts them so far."""
        full = QueueFullError(f"the queue is full ({self.options.max_queue} events)")
        report(self.options.on_error, full, [event], quiet=dropped % DROP_LOG_EVERY != 1)

    def _report_unsent(self, events: list[Event]) -> None:
        """Report the events still queued when the sender stopped."""
        self._report(DeliveryError("shut down first", attempts=0), events)
