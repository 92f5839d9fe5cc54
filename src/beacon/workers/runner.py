"""The runner: what stands between the bus and a consumer's handler.

The bus hands a consumer batches in order per partition; the runner makes sure no message stops
its partition for good:

1. the batch goes to the handler whole;
2. if that raises, then after `backoff.delay(1)` each message of the batch goes alone, in
   order; a message that fails on its own n-th attempt waits `backoff.delay(n)` and goes again;
3. a message that failed alone `max_attempts` times becomes a dead letter of the consumer
   (`dead_letters.py`, written through the write path) and the next message goes on.

Delivery is at least once: messages before the failing one may have had their effect when the
batch failed, a retried message may be handled again after a crash, a dead letter may be
replayed. Handlers make their effects idempotent (`idempotency.first_time`). Attempts are
counted in memory: a process that dies mid-retries leaves the batch to the bus, which delivers
it again and the count starts over. When the process is stopping the runner tries nothing more
and raises `DeliveryAbandoned`; when the dead letter cannot be written it raises that error:
either way the bus keeps the batch and delivers it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from beacon.bus.base import DeliveryAbandoned, sleep_unless_stopped
from beacon.bus.messages import Envelope
from beacon.core.metrics import Metrics
from beacon.storage.transaction import Tx
from beacon.storage.writer import Writer
from beacon.workers.dead_letters import describe, record_dead_letter
from beacon.workers.registry import Consumer

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long a failed message waits before its next attempt.

    After its n-th failed attempt (n >= 1): ``delay(n) = min(cap, base * factor ** (n - 1))``
    seconds; with the defaults 0.5, 1, 2, 4, ... up to 30.
    """

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.factor < 1 or self.cap < self.base:
            raise ValueError("backoff needs base >= 0, factor >= 1 and cap >= base")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (counted from 1)."""
        if attempt < 1:
            raise ValueError("attempts are counted from 1")
        # Capped before the power can overflow a float.
        exponent = min(attempt - 1, 64)
        return float(min(self.cap, self.base * self.factor**exponent))


class ConsumerRunner:
    """A consumer's handler as the bus calls it: retried, dead-lettered, stopped politely."""

    def __init__(
        self,
        consumer: Consumer,
        *,
        writer: Writer,
        backoff: Backoff,
        stop: asyncio.Event,
        metrics: Metrics | None = None,
    ) -> None:
        self.consumer = consumer
        self._writer = writer
        self._backoff = backoff
        self._stop = stop
        self._metrics = metrics

    async def __call__(self, envelopes: Sequence[Envelope]) -> None:
        try:
            await self.consumer.handle(envelopes)
        except Exception as exc:
            if len(envelopes) == 1:
                await self._retry_alone(envelopes[0], attempts=1, error=exc)
                return
            log.warning(
                "consumer_batch_failed",
                consumer=self.consumer.name,
                count=len(envelopes),
                error=describe(exc),
            )
            await self._pause(self._backoff.delay(1))
            for envelope in envelopes:
                await self._handle_alone(envelope)
            return
        self._count("handled", len(envelopes))

    async def _handle_alone(self, envelope: Envelope) -> None:
        try:
            await self.consumer.handle([envelope])
        except Exception as exc:
            await self._retry_alone(envelope, attempts=1, error=exc)
            return
        self._count("handled", 1)

    async def _retry_alone(self, envelope: Envelope, *, attempts: int, error: Exception) -> None:
        """Try `envelope` again until it is handled or has failed `max_attempts` times."""
        while attempts < self.consumer.max_attempts:
            delay = self._backoff.delay(attempts)
            log.warning(
                "consumer_message_failed",
                consumer=self.consumer.name,
                message_id=envelope.id,
                attempts=attempts,
                retry_in_s=delay,
                error=describe(error),
            )
            self._count("retried", 1)
            await self._pause(delay)
            try:
                await self.consumer.handle([envelope])
            except Exception as exc:
                attempts += 1
                error = exc
                continue
            self._count("handled", 1)
            return
        await self._dead_letter(envelope, attempts=attempts, error=error)

    async def _dead_letter(self, envelope: Envelope, *, attempts: int, error: Exception) -> None:
        text = describe(error)

        async def record(tx: Tx) -> str:
            return await record_dead_letter(
                tx, consumer=self.consumer.name, envelope=envelope, error=text, attempts=attempts
            )

        dead_letter_id = await self._writer.run(record)
        log.error(
            "consumer_message_dead_lettered",
            consumer=self.consumer.name,
            message_id=envelope.id,
            dead_letter_id=dead_letter_id,
            attempts=attempts,
            error=text,
        )
        self._count("dead_lettered", 1)

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`; give the batch back to the bus if the process starts stopping."""
        await sleep_unless_stopped(self._stop, seconds)
        if self._stop.is_set():
            raise DeliveryAbandoned(self.consumer.name)

    def _count(self, outcome: str, count: int) -> None:
        if self._metrics is not None:
            self._metrics.consumer_messages.labels(self.consumer.name, outcome).inc(count)
