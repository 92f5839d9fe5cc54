"""The delivery worker: the `deliveries` consumer of `delivery.requested` and of retries that
came due (`delivery.attempt_due`, published by the `delivery-retry` timer).

A batch is handled in three steps: one transaction prepares and claims every attempt
(`sending.Preparer`: status `sending`, who, until when); the sends run concurrently outside any
transaction; each outcome is recorded as soon as it is known (`record_outcome`: the status,
the timeline, `message.delivered` or `message.undelivered`, the suppression of an address that
bounced, the timer of the next attempt per the instance's persisted `RetryPolicy`).

What a crash can do: an attempt claimed by a process that died is made again once that process
has stopped beating (or its lease ran out), with the same content, `Message-ID` and
`webhook-id`. So a provider that accepted a message in the instant between its answer and the
commit of the outcome (an SMTP server's 250 just before a SIGKILL) gets it twice: delivery is
at least once within that window of milliseconds, and exactly once outside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Self

import structlog

from beacon.bus.messages import DELIVERIES_TOPIC, Envelope, MessageType, declare, envelope
from beacon.deliveries import instances, suppression
from beacon.deliveries.channels.base import Outcome, SendResult
from beacon.deliveries.cleanup import cleanup_job
from beacon.deliveries.feedback import record_activity
from beacon.deliveries.outlets import OpenChannels, Outlets
from beacon.deliveries.recipients import ADDRESS_KINDS
from beacon.deliveries.requests import DELIVERY_REQUESTED, DeliveryRequested
from beacon.deliveries.sending import Busy, Preparer, Ready
from beacon.deliveries.webhooks import batches, collect, sender
from beacon.platform import Platform
from beacon.storage.transaction import Tx
from beacon.timers import store as timers
from beacon.timers.store import Timer
from beacon.workers.registry import Consumer, Registry, TimerKind

log = structlog.get_logger()

CONSUMER = "deliveries"
RETRY_KIND = "delivery-retry"
ATTEMPT_DUE = "delivery.attempt_due"
# A message another live process is sending is retried by the runner until that process is
# known to be gone (three missed heartbeats): more attempts than a consumer's default.
MAX_ATTEMPTS = 10


@declare
@dataclass(frozen=True, slots=True)
class DeliveryAttemptDue:
    """Attempt number `attempt` of the delivery `delivery_id` is due (its retry timer fired)."""

    TYPE: ClassVar[MessageType] = MessageType(ATTEMPT_DUE, 1, DELIVERIES_TOPIC)

    id: str
    delivery_id: str
    profile_id: str
    attempt: int

    @property
    def partition_key(self) -> str:
        return self.profile_id

    def to_body(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "profile_id": self.profile_id,
            "attempt": self.attempt,
            "v": self.TYPE.version,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Self:
        cls.TYPE.check_version(body)
        delivery_id, attempt = body["delivery_id"], body["attempt"]
        return cls(f"{delivery_id}:{attempt}", delivery_id, body["profile_id"], attempt)


class SendInProgress(Exception):
    """Deliveries in the batch are being sent by other live processes; the runner tries again."""


class DeliveryWorker:
    """Sends what delivery requests ask for, through the configured channels."""

    def __init__(self, platform: Platform, outlets: Outlets) -> None:
        self._writer = platform.writer
        self._outlets = outlets
        self._in_flight: set[str] = set()
        self._preparer = Preparer(
            outlets=outlets,
            process_id=platform.process_id,
            heartbeat_seconds=platform.settings.worker_heartbeat_seconds,
            in_flight=self._in_flight,
        )
        self._concurrency = platform.settings.delivery_concurrency

    async def handle(self, envelopes: Sequence[Envelope]) -> None:
        """Prepare, send and record each delivery the batch asks for."""
        wanted = [e for e in envelopes if e.type in (DELIVERY_REQUESTED, ATTEMPT_DUE)]
        if not wanted:
            return
        outcomes = await self._writer.run(lambda tx: self._prepare(tx, wanted))
        ready = [o for o in outcomes if isinstance(o, Ready)]
        busy = [o for o in outcomes if isinstance(o, Busy)]
        ids = {r.instance.delivery_id for r in ready}
        self._in_flight.update(ids)
        try:
            if ready:
                limit = asyncio.Semaphore(self._concurrency)
                async with self._outlets.open() as channels:
                    await asyncio.gather(*(self._send(channels, r, limit) for r in ready))
        finally:
            self._in_flight.difference_update(ids)
        if busy:
            owners = ", ".join(sorted({b.owner for b in busy}))
            raise SendInProgress(f"{len(busy)} deliveries are being sent by {owners}")

    async def _prepare(self, tx: Tx, wanted: list[Envelope]) -> list[Ready | Busy | None]:
        outcomes: list[Ready | Busy | None] = []
        for item in wanted:
            if item.type == DELIVERY_REQUESTED:
                requested = DeliveryRequested.from_body(item.body)
                outcomes.append(await self._preparer.for_request(tx, requested.request_id))
            else:
                due = DeliveryAttemptDue.from_body(item.body)
                outcomes.append(await self._preparer.for_retry(tx, due.delivery_id, due.attempt))
        return outcomes

    async def _send(self, channels: OpenChannels, ready: Ready, limit: asyncio.Semaphore) -> None:
        async with limit:
            try:
                channel = channels.get(ready.instance.channel)
                result = await channel.send(ready.rendered, ready.recipient)
            except Exception as error:  # a channel never should; if it does, this attempt failed
                log.warning(
                    "delivery_channel_raised", delivery=ready.instance.delivery_id, exc_info=True
                )
                result = SendResult.temporary(f"{type(error).__name__}: {error}")
        await self._writer.run(lambda tx: record_outcome(tx, ready, result, self._outlets))


async def record_outcome(tx: Tx, ready: Ready, result: SendResult, outlets: Outlets) -> None:
    """Record how a claimed attempt went, and what follows from it."""
    instance = ready.instance
    attempt = instance.attempts
    detail = result.description or result.outcome.value
    if result.outcome is Outcome.ACCEPTED:
        if await instances.finish(
            tx, instance, status="sent", reason=detail, provider_id=result.provider_id
        ):
            await instances.add_timeline(
                tx,
                instance.id,
                "sent",
                attempt=attempt,
                detail=detail,
                latency_ms=result.latency_ms,
            )
            await record_activity(tx, instance, "delivered", signer=outlets.signer)
        return
    retry_at = None
    if result.outcome is Outcome.FAILED_TEMPORARY:
        retry_at = instance.policy.next_attempt_at(
            attempt=attempt, failed_at=tx.now, retry_after=result.retry_after
        )
    if retry_at is not None:
        if not await instances.finish(
            tx, instance, status="retrying", reason=detail, next_attempt_at=retry_at
        ):
            return
        await instances.add_timeline(
            tx,
            instance.id,
            "retrying",
            attempt=attempt,
            detail=f"{detail}; next attempt at {retry_at.isoformat()}",
            latency_ms=result.latency_ms,
        )
        due = DeliveryAttemptDue("", instance.delivery_id, instance.profile_id, attempt + 1)
        await timers.schedule(
            tx,
            key=f"{RETRY_KIND}:{instance.delivery_id}:{attempt + 1}",
            kind=RETRY_KIND,
            run_at=retry_at,
            payload=due.to_body(),
        )
        return
    status = "failed" if result.outcome is Outcome.FAILED_PERMANENT else "dead"
    reason = detail if status == "failed" else f"gave up after {attempt} attempts: {detail}"
    if not await instances.finish(tx, instance, status=status, reason=reason):
        return
    await instances.add_timeline(
        tx, instance.id, status, attempt=attempt, detail=reason, latency_ms=result.latency_ms
    )
    address_kind = ADDRESS_KINDS.get(instance.kind)
    # An SMTP 5xx names a mailbox that is gone; a provider can say so of a number (Twilio's
    # 21610) or a subscription.
    bounced = status == "failed" and instance.channel == "email" and detail.startswith("SMTP 5")
    gone = result.unsubscribe or bounced
    if gone and address_kind is not None and instance.recipient:
        await suppression.suppress(
            tx,
            kind=address_kind,
            address=instance.recipient,
            reason="bounced",
            detail=detail,
            delivery_id=instance.delivery_id,
        )
    extra = {"statusDescription": reason}
    await record_activity(tx, instance, "undelivered", signer=outlets.signer, extra=extra)


async def fire_retries(tx: Tx, due: Sequence[Timer]) -> None:
    """Publish the attempts whose retry timers fired, for the delivery worker."""
    tx.enqueue(envelope(DeliveryAttemptDue.from_body(timer.payload)) for timer in due)


def consumer(worker: DeliveryWorker) -> Consumer:
    """The `deliveries` consumer."""
    return Consumer(CONSUMER, DELIVERIES_TOPIC, worker.handle, max_attempts=MAX_ATTEMPTS)


def retry_timers() -> TimerKind:
    """The `delivery-retry` timer kind."""
    return TimerKind(RETRY_KIND, fire_retries)


def register(registry: Registry, platform: Platform) -> None:
    """Messaging's consumers and timers: the delivery worker and its retries; the activity
    collector, the batch timer, the webhook sender and its retries; the cleanup of old rows
    (`cleanup`). Settings that cannot send stop the process here, naming the setting."""
    outlets = Outlets.from_settings(platform.settings)
    settings = platform.settings
    registry.consumer(consumer(DeliveryWorker(platform, outlets)))
    registry.timer(retry_timers())
    registry.consumer(collect.consumer(collect.ActivityCollector(platform)))
    maker = batches.BatchMaker(
        max_items=settings.webhook_batch_max_items,
        max_bytes=settings.webhook_batch_max_bytes,
        max_wait=timedelta(seconds=settings.webhook_batch_seconds),
    )
    registry.timer(batches.batch_timers(maker))
    registry.consumer(sender.consumer(sender.WebhookSender(platform, outlets)))
    registry.timer(sender.retry_timers())
    registry.periodic(cleanup_job(platform))
