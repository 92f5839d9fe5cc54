"""The queue of events waiting to be sent, and the request bodies batches of them make.

Neither is thread-safe: each client guards its queue with its own lock (or event loop).
"""

from __future__ import annotations

import gzip
from collections import deque
from dataclasses import dataclass

from beacon_sdk.event import BODY_CLOSE, BODY_OPEN, MAX_BODY_BYTES, Event

MAX_BATCH_EVENTS = 1000  # the server's limit per request


@dataclass(frozen=True, slots=True)
class Queued:
    seq: int
    event: Event


class EventQueue:
    """Events waiting to be sent, oldest first; when full, the oldest event is dropped.

    Each event gets a sequence number, so `flush` can wait for everything tracked before it:
    `settled(seq)` is true once every event numbered below `seq` was delivered or given up.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.dropped = 0
        self._events: deque[Queued] = deque()
        self._next_seq = 0
        self._in_flight: int | None = None  # the lowest sequence number being sent

    def __len__(self) -> int:
        return len(self._events)

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def oldest_seq(self) -> int | None:
        return self._events[0].seq if self._events else None

    def put(self, event: Event) -> Event | None:
        """Queue `event`; return the oldest event if it had to be dropped to make room."""
        dropped = None
        if len(self._events) >= self.max_size:
            dropped = self._events.popleft().event
            self.dropped += 1
        self._events.append(Queued(self._next_seq, event))
        self._next_seq += 1
        return dropped

    def take(self, max_events: int) -> list[Event]:
        """Take the next batch: up to `max_events` whose body fits in `MAX_BODY_BYTES`."""
        batch: list[Event] = []
        size = len(BODY_OPEN) + len(BODY_CLOSE)
        while self._events and len(batch) < max_events:
            cost = len(self._events[0].event.encoded) + (1 if batch else 0)
            if batch and size + cost > MAX_BODY_BYTES:
                break
            queued = self._events.popleft()
            if not batch:
                self._in_flight = queued.seq
            batch.append(queued.event)
            size += cost
        return batch

    def done(self) -> None:
        """Mark the batch taken last as settled: delivered or given up."""
        self._in_flight = None

    def drain(self) -> list[Event]:
        """Remove and return every queued event."""
        events = [queued.event for queued in self._events]
        self._events.clear()
        return events

    def settled(self, seq: int) -> bool:
        """Return whether every event numbered below `seq` has left the queue and the sender."""
        if self._in_flight is not None:
            return self._in_flight >= seq
        oldest = self.oldest_seq()
        return oldest is None or oldest >= seq


def request_body(events: list[Event], *, compress: bool) -> tuple[bytes, dict[str, str]]:
    """Return the `{"events": [...]}` body for `events` and its content headers."""
    body = BODY_OPEN + b",".join(event.encoded for event in events) + BODY_CLOSE
    headers = {"Content-Type": "application/json"}
    if compress:
        body = gzip.compress(body, compresslevel=6, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return body, headers
