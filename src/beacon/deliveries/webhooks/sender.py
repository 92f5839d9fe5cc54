"""The `webhooks` consumer: posts each webhook message that is due, signed, and records the
attempt; and the `webhook-retry` timer that makes the next one due.

Each attempt is claimed before the post (as deliveries' are: `leases`) and logged after it
(status, latency, the start of the answer). 2xx delivers the message; `410 Gone` fails it and
disables the endpoint; anything else (an error status, no answer within the time limit, a
refused address) is tried again per the message's persisted `RetryPolicy`, `Retry-After`
honoured, until the schedule ends (then the message is failed: a replay sends it again). An
endpoint failing without a success for `webhook_disable_after_days` is disabled; its messages
are held until it is enabled. Every attempt carries the message's own `webhook-id`; the
timestamp and signatures are made per attempt, on real time (receivers check them against
their clocks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from beacon.bus.messages import DELIVERIES_TOPIC, Envelope, envelope
from beacon.core.ids import new_id
from beacon.deliveries.leases import abandoned, lease_until
from beacon.deliveries.outbound import OutboundError, OutboundHttp, OutboundResponse
from beacon.deliveries.outlets import Outlets
from beacon.deliveries.retry import RetryPolicy
from beacon.deliveries.signing import WebhookSigner
from beacon.deliveries.webhooks.endpoints import (
    Endpoint,
    disable_endpoint,
    load_endpoint,
    signing_secrets,
)
from beacon.deliveries.webhooks.formats import sample_body
from beacon.deliveries.webhooks.messages import WEBHOOK_DUE, WebhookDue
from beacon.identity.actions import db_json, db_time
from beacon.platform import Platform
from beacon.storage.transaction import Tx
from beacon.timers import store as timers
from beacon.timers.store import Timer
from beacon.workers.registry import Consumer, TimerKind

CONSUMER = "webhooks"
RETRY_KIND = "webhook-retry"
MAX_ATTEMPTS = 10  # a message another live process is posting waits for it to be known gone
EXCERPT_KEPT = 2048
# Posts in flight at once per batch: httpcore's pool holds 10 connections, and requests queued
# past them cost it a scan each (measured: 8 at a time posts 20 % more than 50).
POSTS_AT_ONCE = 8


@dataclass(frozen=True, slots=True)
class Claimed:
    """An attempt this process makes now."""

    message_id: str
    endpoint: Endpoint
    body: bytes
    attempt: int
    policy: RetryPolicy
    by: str


@dataclass(frozen=True, slots=True)
class Answer:
    """How one post went: the answer, or why there was none."""

    response: OutboundResponse | None
    error: str | None = None
    latency_ms: float | None = None

    @property
    def outcome(self) -> str:
        if self.response is None:
            return "no_answer"
        if 200 <= self.response.status < 300:
            return "delivered"
        return "gone" if self.response.status == 410 else "failed"


class WebhookBusy(Exception):
    """Messages of the batch are being posted by other live processes; tried again later."""


class WebhookSender:
    """Posts due webhook messages."""

    def __init__(self, platform: Platform, outlets: Outlets) -> None:
        self._writer = platform.writer
        self._outlets = outlets
        self._me = platform.process_id
        self._heartbeat = platform.settings.worker_heartbeat_seconds
        self._disable_after = timedelta(days=platform.settings.webhook_disable_after_days)
        self._concurrency = min(POSTS_AT_ONCE, platform.settings.delivery_concurrency)
        self._in_flight: set[str] = set()

    async def handle(self, envelopes: Sequence[Envelope]) -> None:
        """Claim, post and record each due message of the batch."""
        dues = [WebhookDue.from_body(e.body) for e in envelopes if e.type == WEBHOOK_DUE]
        if not dues:
            return
        claims = await self._writer.run(lambda tx: self._claim_all(tx, dues))
        ready = [c for c in claims if isinstance(c, Claimed)]
        busy = [c for c in claims if isinstance(c, str)]
        ids = {c.message_id for c in ready}
        self._in_flight.update(ids)
        try:
            if ready:
                limit = asyncio.Semaphore(self._concurrency)
                async with OutboundHttp(policy=self._outlets.webhook_policy) as http:
                    await asyncio.gather(*(self._post(http, c, limit) for c in ready))
        finally:
            self._in_flight.difference_update(ids)
        if busy:
            raise WebhookBusy(f"webhook messages being posted elsewhere: {', '.join(busy)}")

    async def _claim_all(self, tx: Tx, dues: list[WebhookDue]) -> list[Claimed | str | None]:
        return [await self._claim(tx, due) for due in dues]

    async def _claim(self, tx: Tx, due: WebhookDue) -> Claimed | str | None:
        rows = await tx.sql.fetch(
            "SELECT body, status, attempts, retry_policy, sending_by, sending_until"
            " FROM webhook_messages WHERE id = ?",
            due.message_id,
        )
        if not rows:
            return None
        body, status, attempts, policy, owner, until = rows[0]
        fresh = status in ("pending", "retrying") and attempts == due.attempt - 1
        if not (fresh or (status == "sending" and attempts == due.attempt)):
            return None
        endpoint = await load_endpoint(tx.sql.fetch, due.endpoint_id)
        if endpoint is None:
            return None
        if not endpoint.enabled:
            await tx.sql.execute(
                "UPDATE webhook_messages SET status = 'held', sending_by = NULL, updated_at = ?"
                " WHERE id = ? AND status = ? AND attempts = ?",
                tx.now,
                due.message_id,
                status,
                attempts,
            )
            return None
        if status == "sending":
            taken = await abandoned(
                tx.sql,
                owner=owner,
                until=db_time(until),
                me=self._me,
                in_flight=due.message_id in self._in_flight,
                heartbeat_seconds=self._heartbeat,
            )
            if taken is None:
                return None
            if not taken:
                return due.message_id
        claimed = await tx.sql.execute(
            "UPDATE webhook_messages SET status = 'sending', attempts = attempts + 1,"
            " sending_by = ?, sending_until = ?, next_attempt_at = NULL, updated_at = ?"
            " WHERE id = ? AND status = ? AND attempts = ?",
            self._me,
            lease_until(),
            tx.now,
            due.message_id,
            status,
            attempts,
        )
        if not claimed:
            return None
        return Claimed(
            message_id=due.message_id,
            endpoint=endpoint,
            body=str(body).encode(),
            attempt=int(attempts) + 1,
            policy=RetryPolicy.from_json(db_json(policy)),
            by=self._me,
        )

    async def _post(self, http: OutboundHttp, claim: Claimed, limit: asyncio.Semaphore) -> None:
        async with limit:
            answer = await post_signed(http, claim.endpoint, claim.message_id, claim.body)
        await self._writer.run(lambda tx: self._record(tx, claim, answer))

    async def _record(self, tx: Tx, claim: Claimed, answer: Answer) -> None:
        await log_attempt(tx, claim.endpoint.id, claim.message_id, claim.attempt, answer)
        endpoint = claim.endpoint
        outcome = answer.outcome
        if outcome == "delivered":
            await self._finish(tx, claim, "delivered", None, delivered=True)
            await tx.sql.execute(
                "UPDATE webhook_endpoints SET failing_since = NULL"
                " WHERE id = ? AND failing_since IS NOT NULL",
                endpoint.id,
            )
            return
        error = describe(answer)
        if outcome == "gone":
            if await self._finish(tx, claim, "failed", error):
                await disable_endpoint(tx, endpoint, reason=f"the endpoint answered {error}")
            return
        await tx.sql.execute(
            "UPDATE webhook_endpoints SET failing_since = ? WHERE id = ? AND failing_since IS NULL",
            tx.now,
            endpoint.id,
        )
        since = (await load_endpoint(tx.sql.fetch, endpoint.id) or endpoint).failing_since or tx.now
        if tx.now - since >= self._disable_after:
            if await self._finish(tx, claim, "held", error):
                days = (tx.now - since) / timedelta(days=1)
                reason = f"failing for {days:.1f} days without a success (last: {error})"
                await disable_endpoint(tx, endpoint, reason=reason)
            return
        retry_after = (
            None if answer.response is None else answer.response.headers.get("retry-after")
        )
        next_at = claim.policy.next_attempt_at(
            attempt=claim.attempt, failed_at=tx.now, retry_after=retry_after
        )
        if next_at is None:
            await self._finish(
                tx, claim, "failed", f"gave up after {claim.attempt} attempts: {error}"
            )
            return
        if await self._finish(tx, claim, "retrying", error, next_at=next_at):
            due = WebhookDue(claim.message_id, endpoint.id, claim.attempt + 1)
            await timers.schedule(
                tx,
                key=f"{RETRY_KIND}:{due.id}",
                kind=RETRY_KIND,
                run_at=next_at,
                payload=due.to_body(),
            )

    async def _finish(
        self,
        tx: Tx,
        claim: Claimed,
        status: str,
        error: str | None,
        *,
        next_at: datetime | None = None,
        delivered: bool = False,
    ) -> bool:
        changed = await tx.sql.execute(
            "UPDATE webhook_messages SET status = ?, last_error = ?, next_attempt_at = ?,"
            " sending_by = NULL, sending_until = NULL, updated_at = ?,"
            " delivered_at = COALESCE(?, delivered_at)"
            " WHERE id = ? AND status = 'sending' AND attempts = ? AND sending_by = ?",
            status,
            error,
            next_at,
            tx.now,
            tx.now if delivered else None,
            claim.message_id,
            claim.attempt,
            claim.by,
        )
        return changed > 0


async def post_signed(
    http: OutboundHttp, endpoint: Endpoint, webhook_id: str, body: bytes
) -> Answer:
    """Post `body` to the endpoint, signed with its current secrets; never raises for the post."""
    now = datetime.now(UTC)
    signer = WebhookSigner(secrets=signing_secrets(endpoint.secrets, now=now))
    headers = {
        **signer.headers(webhook_id=webhook_id, timestamp=now, body=body),
        "Content-Type": "application/json",
    }
    try:
        response = await http.post(endpoint.url, content=body, headers=headers)
    except OutboundError as error:
        return Answer(None, str(error), error.latency_ms)
    return Answer(response, None, response.latency_ms)


async def log_attempt(
    tx: Tx, endpoint_id: str, message_id: str, attempt: int, answer: Answer
) -> None:
    """Add an attempt to the endpoint's log."""
    response = answer.response
    await tx.sql.execute(
        "INSERT INTO webhook_attempts (endpoint_id, webhook_message_id, attempt, at, outcome,"
        " status_code, latency_ms, response_excerpt, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        endpoint_id,
        message_id,
        attempt,
        tx.now,
        answer.outcome,
        None if response is None else response.status,
        answer.latency_ms,
        None if response is None else response.excerpt[:EXCERPT_KEPT],
        answer.error,
    )


async def send_test(platform: Platform, outlets: Outlets, endpoint: Endpoint) -> tuple[str, Answer]:
    """Post one made-up element to the endpoint now (enabled or not) and log the attempt;
    return the test's `webhook-id` and how it went."""
    webhook_id = "test_" + new_id().replace("-", "")
    body = sample_body(endpoint, now=platform.clock.now())
    async with OutboundHttp(policy=outlets.webhook_policy) as http:
        answer = await post_signed(http, endpoint, webhook_id, body)
    await platform.writer.run(lambda tx: log_attempt(tx, endpoint.id, webhook_id, 1, answer))
    return webhook_id, answer


def describe(answer: Answer) -> str:
    """One line: the status and the start of the answer, or why there was none."""
    if answer.response is None:
        return answer.error or "no answer"
    excerpt = " ".join(answer.response.excerpt.split())[:200]
    return f"HTTP {answer.response.status}" + (f": {excerpt}" if excerpt else "")


async def fire_retries(tx: Tx, due: Sequence[Timer]) -> None:
    """Publish the webhook messages whose retry timers fired, for the sender."""
    tx.enqueue(envelope(WebhookDue.from_body(timer.payload)) for timer in due)


def consumer(sender: WebhookSender) -> Consumer:
    """The `webhooks` consumer of the deliveries topic."""
    return Consumer(CONSUMER, DELIVERIES_TOPIC, sender.handle, max_attempts=MAX_ATTEMPTS)


def retry_timers() -> TimerKind:
    """The `webhook-retry` timer kind."""
    return TimerKind(RETRY_KIND, fire_retries)
