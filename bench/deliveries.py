"""Deliveries benchmark: webhook deliveries and emails per second to local receivers, and how
long a send takes from the API call to its arrival.

For each storage backend, on a fresh database, Beacon runs as a user runs it: `beacon serve`
on SQLite (it runs the consumers); on PostgreSQL `beacon serve` and a `beacon worker` on Redis
(BEACON_BENCH_REDIS_URL or BEACON_TEST_REDIS_URL; without Redis, PostgreSQL is skipped). The
benchmark runs the receivers itself: an HTTP server on loopback and an SMTP server (aiosmtpd).

1. webhooks: `--events` events of a forwarded type are ingested through `/api/v1/events` while
   their endpoint (the `events` format) is disabled, so their items wait; once all wait, the
   endpoint is enabled and the time from then to the last element received gives elements/s
   and signed POSTs/s (batches of `BEACON_WEBHOOK_BATCH_MAX_ITEMS`, 100). The same again with
   one element per POST (`--single` events, a second deployment with batches of 1): POSTs/s
   when nothing is batched. Target: >= 2,000 webhook deliveries (elements) per second on
   PostgreSQL + Redis.
2. emails: `--emails` transactional sends through `POST /api/messages/{id}/send`; on Redis the
   worker is stopped meanwhile and started once all are queued, so the figure is the delivery
   worker's (first to last message received by the SMTP server); on SQLite the server sends
   while the calls come.
3. latency: `--rate` sends per second for `--seconds`, each an email and a DELIVERED activity
   (eSputnik format, `BEACON_WEBHOOK_BATCH_SECONDS` 1): from the start of the API call to the
   SMTP server's 250, and to the activity's arrival; p50 / p99 / max.

Prints one JSON document to stdout; progress goes to stderr. Usage: `python bench/deliveries.py
[--events N] [--single N] [--emails N] [--rate N] [--seconds S] [--backend sqlite|postgres|all]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiohttp import web
from aiosmtpd.smtp import SMTP

from processes import beacon_cli, beacon_env, free_port, progress
from verdicts import (
    Figures,
    Verdicts,
    add_backend_argument,
    check,
    chosen,
    configured_redis_url,
    delete_redis_keys,
    fetch_value,
    load_average,
    run_and_report,
    run_on_scratch_postgres,
    run_on_scratch_sqlite,
)

EVENTS = 20_000
SINGLE = 3_000
EMAILS = 2_000
RATE = 20
SECONDS = 15.0
INGEST_BATCH = 500
CONCURRENT_SENDS = 16
READY_S = 60.0
DRAIN_S = 600.0
POLL_S = 0.1
MIN_WEBHOOK_ELEMENTS_PER_S = 2000.0
CACHE_S = 2.5  # longer than the endpoints cache's lifetime (BEACON_CACHE_TTL_SECONDS, 2)
ADMIN_TOKEN = uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FORWARDED = "bench.forwarded"
NOTE = {
    "email": {
        "subject": "Order {{ context.n }}",
        "html": "<p>Order {{ context.n }}: <a href='https://shop.example.com/o'>see it</a></p>",
        "text": "Order {{ context.n }}",
    }
}


# --- the receivers ---------------------------------------------------------------------------


@dataclass
class Stream:
    """What arrived on one path: POSTs, elements, webhook ids, when the last came."""

    posts: int = 0
    elements: int = 0
    ids: set[str] = field(default_factory=set)
    last_at: float = 0.0


@dataclass
class Receiver:
    """A local HTTP server counting what arrives per path, and when each message instance's
    activity first arrived."""

    port: int = 0
    paths: dict[str, Stream] = field(default_factory=dict)
    instances: dict[int, float] = field(default_factory=dict)  # messageInstanceId → arrival

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        now = time.monotonic()
        items = body["events"] if isinstance(body, dict) else body
        stream = self.paths.setdefault(request.path, Stream())
        stream.posts += 1
        stream.elements += len(items)
        stream.ids.add(request.headers["webhook-id"])
        stream.last_at = now
        for item in items:
            if "messageInstanceId" in item:
                self.instances.setdefault(item["messageInstanceId"], now)
        return web.Response(text="ok")


@dataclass
class Mailbox:
    """An SMTP server keeping when each delivery's message arrived (its Message-ID)."""

    port: int = 0
    arrived: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        for line in envelope.content.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                delivery = line.split(b"<", 1)[1].split(b"@", 1)[0].decode()
                if delivery in self.arrived:
                    self.duplicates += 1
                self.arrived.setdefault(delivery, time.monotonic())
                break
        return "250 2.0.0 Ok"


@contextlib.asynccontextmanager
async def receivers() -> AsyncIterator[tuple[Receiver, Mailbox]]:
    receiver, mailbox = Receiver(), Mailbox()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = runner.addresses[0][1]
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(
        lambda: SMTP(mailbox, hostname="mx.bench.test", loop=loop), "127.0.0.1", 0
    )
    mailbox.port = smtp.sockets[0].getsockname()[1]
    try:
        yield receiver, mailbox
    finally:
        smtp.close()
        await runner.cleanup()


# --- Beacon's processes ----------------------------------------------------------------------


@dataclass
class Deployment:
    """`beacon serve` (and a `beacon worker` on Redis) with one environment."""

    env: dict[str, str]
    workdir: Path
    redis: bool
    port: int = field(default_factory=free_port)
    server: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        with (self.workdir / log).open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "beacon", *args],
                env=self.env,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start(self, *, worker: bool = True) -> None:
        self.server = self.spawn("serve", "--port", str(self.port), log="server.log")
        deadline = time.monotonic() + READY_S
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                self.check()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server was not ready: {self.log('server.log')}")
                await asyncio.sleep(0.2)
        if worker and self.redis:
            await self.start_worker()

    async def start_worker(self) -> None:
        (self.workdir / "worker.log").write_bytes(b"")
        self.worker = self.spawn("worker", log="worker.log")
        deadline = time.monotonic() + READY_S
        while "worker running" not in self.log("worker.log"):
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start: {self.log('worker.log')}")
            await asyncio.sleep(0.2)

    def stop_worker(self) -> None:
        if self.worker is not None:
            _stop(self.worker)
            self.worker = None

    def stop(self) -> None:
        self.stop_worker()
        if self.server is not None:
            _stop(self.server)
            self.server = None

    def check(self) -> None:
        for process, log in ((self.server, "server.log"), (self.worker, "worker.log")):
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"a Beacon process exited: {self.log(log)}")

    def log(self, name: str) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(20)


async def count(database_url: str, sql: str) -> int:
    """One number from the database, read beside Beacon."""
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]

        def read() -> int:
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
                return int(conn.execute(sql).fetchone()[0])

        return await asyncio.to_thread(read)
    return int(await fetch_value(database_url, sql))


async def wait_for(
    what: str, done: Callable[[], Any], deployment: Deployment, timeout: float = DRAIN_S
) -> None:
    deadline = time.monotonic() + timeout
    while not await done():
        deployment.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_S)


# --- the phases ------------------------------------------------------------------------------


async def api(http: httpx.AsyncClient, method: str, path: str, **kw: Any) -> Any:
    response = await http.request(method, path, headers=ADMIN, **kw)
    if response.status_code >= 400:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
    return response.json() if response.content else None


async def webhooks(
    deployment: Deployment,
    receiver: Receiver,
    write_key: str,
    events: int,
    database_url: str,
    path: str,
) -> dict[str, Any]:
    """Items waiting behind a disabled endpoint (at `path`), then drained at once."""
    async with httpx.AsyncClient(base_url=deployment.url, timeout=60) as http:
        endpoint = await api(
            http,
            "POST",
            "/api/webhooks",
            json={
                "url": f"http://127.0.0.1:{receiver.port}{path}",
                "format": "events",
                "event_types": [FORWARDED],
                "enabled": False,
            },
        )
        await asyncio.sleep(CACHE_S)  # the collector's endpoint cache
        started = time.monotonic()
        for first in range(0, events, INGEST_BATCH):
            batch = [
                {"type": FORWARDED, "user_id": f"u-{n % 1000}", "properties": {"n": n}}
                for n in range(first, min(events, first + INGEST_BATCH))
            ]
            response = await http.post(
                "/api/v1/events",
                json={"events": batch},
                headers={"Authorization": f"Bearer {write_key}"},
            )
            if response.status_code != 200:
                raise RuntimeError(f"ingest: {response.status_code} {response.text[:300]}")
        ingested_s = time.monotonic() - started
        sql = f"SELECT count(*) FROM webhook_items WHERE endpoint_id = '{endpoint['id']}'"

        async def collected() -> bool:
            return await count(database_url, sql) >= events

        await wait_for("the items to be collected", collected, deployment)
        collected_s = time.monotonic() - started
        stream = receiver.paths.setdefault(path, Stream())
        enabled_at = time.monotonic()
        await api(http, "PATCH", f"/api/webhooks/{endpoint['id']}", json={"enabled": True})

        async def drained() -> bool:
            return stream.elements >= events

        await wait_for("the elements to arrive", drained, deployment)
    span = max(1e-6, stream.last_at - enabled_at)
    return {
        "elements": stream.elements,
        "posts": stream.posts,
        "distinct_webhook_ids": len(stream.ids),
        "seconds": round(span, 2),
        "elements_per_s": round(events / span, 1),
        "posts_per_s": round(stream.posts / span, 1),
        "ingest_s": round(ingested_s, 1),
        "ingest_and_collect_s": round(collected_s, 1),
    }


async def send_all(
    http: httpx.AsyncClient, message_id: int, total: int, first: int
) -> dict[str, float]:
    """Send `total` messages, `CONCURRENT_SENDS` calls at a time; return each delivery's start."""
    started: dict[str, float] = {}
    queue = iter(range(first, first + total))

    async def sender() -> None:
        for n in queue:
            at = time.monotonic()
            sent = await api(
                http,
                "POST",
                f"/api/messages/{message_id}/send",
                json={"to": {"email": f"c{n}@example.com"}, "params": {"n": n}},
            )
            started[sent["delivery_id"]] = at

    await asyncio.gather(*(sender() for _ in range(CONCURRENT_SENDS)))
    return started


async def emails(
    deployment: Deployment, mailbox: Mailbox, message_id: int, total: int
) -> dict[str, Any]:
    """Sends queued (worker stopped, on Redis), then drained by the delivery worker."""
    if deployment.redis:
        deployment.stop_worker()
    async with httpx.AsyncClient(base_url=deployment.url, timeout=60) as http:
        calls_started = time.monotonic()
        started = await send_all(http, message_id, total, first=1_000_000)
        calls_s = time.monotonic() - calls_started
    if deployment.redis:
        await deployment.start_worker()

    async def arrived() -> bool:
        return all(d in mailbox.arrived for d in started)

    await wait_for("the emails to arrive", arrived, deployment)
    times = sorted(mailbox.arrived[d] for d in started)
    span = max(1e-6, times[-1] - times[0])
    return {
        "emails": total,
        "seconds": round(span, 2),
        "emails_per_s": round(total / span, 1),
        "api_calls_s": round(calls_s, 2),
        "worker_stopped_while_queued": deployment.redis,
    }


async def latency(
    deployment: Deployment,
    receiver: Receiver,
    mailbox: Mailbox,
    message_id: int,
    *,
    rate: int,
    seconds: float,
) -> dict[str, Any]:
    """Steady sends: API call → SMTP 250, and → DELIVERED activity received."""
    started: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=deployment.url, timeout=60) as http:
        await api(
            http,
            "POST",
            "/api/webhooks",
            json={"url": f"http://127.0.0.1:{receiver.port}/activity", "statuses": ["DELIVERED"]},
        )
        await asyncio.sleep(CACHE_S)  # the collector's endpoint cache
        total = int(rate * seconds)
        begin = time.monotonic()
        tasks = []
        for n in range(total):
            await asyncio.sleep(max(0.0, begin + n / rate - time.monotonic()))

            async def one(n: int = n) -> None:
                at = time.monotonic()
                sent = await api(
                    http,
                    "POST",
                    f"/api/messages/{message_id}/send",
                    json={"to": {"email": f"l{n}@example.com"}, "params": {"n": n}},
                )
                started[sent["delivery_id"]] = at

            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        instances: dict[str, int] = {}

        async def everything() -> bool:
            if not all(d in mailbox.arrived for d in started):
                return False
            for delivery_id in started:
                if delivery_id not in instances:
                    found = await api(http, "GET", f"/api/deliveries/{delivery_id}")
                    if found["message_instance_id"] is None:
                        return False
                    instances[delivery_id] = found["message_instance_id"]
            return all(i in receiver.instances for i in instances.values())

        await wait_for("every email and activity", everything, deployment)
    email = sorted(mailbox.arrived[d] - t for d, t in started.items())
    activity = sorted(receiver.instances[instances[d]] - t for d, t in started.items())
    return {
        "sends": len(started),
        "rate_per_s": rate,
        "email_s": spread(email),
        "activity_s": spread(activity),
    }


def spread(values: list[float]) -> dict[str, float]:
    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 3)

    return {"p50": at(0.5), "p99": at(0.99), "max": round(values[-1], 3)}


# --- one backend -----------------------------------------------------------------------------


async def bench_backend(
    database_url: str, workdir: Path, redis_url: str | None, args: argparse.Namespace
) -> Figures:
    async with receivers() as (receiver, mailbox):
        env = beacon_env(database_url, admin_token=ADMIN_TOKEN)
        prefix = f"beacon-bench-{uuid.uuid4().hex[:12]}"
        env.update(
            BEACON_DELIVERY_CHANNELS=json.dumps({"email": "email"}),
            BEACON_CHANNEL_SETTINGS=json.dumps(
                {
                    "email": {
                        "host": "127.0.0.1",
                        "port": mailbox.port,
                        "security": "plain",
                        "from_address": "shop@example.com",
                    }
                }
            ),
            BEACON_OUTBOUND_ALLOW_NETWORKS="127.0.0.0/8",
            BEACON_WEBHOOK_BATCH_SECONDS="1",
        )
        if redis_url is not None:
            env.update(BEACON_BUS_URL=redis_url, BEACON_BUS_PREFIX=prefix)
        progress("beacon migrate")
        beacon_cli(["migrate"], env=env, cwd=workdir)
        load_before = load_average()
        deployment = Deployment(env, workdir, redis=redis_url is not None)
        single = Deployment(
            {**env, "BEACON_WEBHOOK_BATCH_MAX_ITEMS": "1"}, workdir, redis=redis_url is not None
        )
        try:
            await deployment.start()
            async with httpx.AsyncClient(base_url=deployment.url, timeout=60) as http:
                await api(http, "POST", "/api/sources", json={"id": "bench", "name": "bench"})
                key = (await api(http, "GET", "/api/sources/bench"))["write_key"]
                await api(http, "PUT", "/api/templates/note", json={"content": NOTE})
                message = await api(
                    http,
                    "POST",
                    "/api/messages",
                    json={"template": "note", "channel": "email", "transactional": True},
                )
            progress(f"webhooks: {args.events:,} elements behind a disabled endpoint")
            batched = await webhooks(
                deployment, receiver, key, args.events, database_url, "/batched"
            )
            progress(json.dumps(batched))
            progress(f"emails: {args.emails:,} transactional sends")
            mail = await emails(deployment, mailbox, message["id"], args.emails)
            progress(json.dumps(mail))
            progress(f"latency: {args.rate}/s for {args.seconds:g} s")
            late = await latency(
                deployment, receiver, mailbox, message["id"], rate=args.rate, seconds=args.seconds
            )
            progress(json.dumps(late))
            deployment.stop()
            progress(f"webhooks one element a POST: {args.single:,}")
            await single.start()
            unbatched = await webhooks(single, receiver, key, args.single, database_url, "/single")
            progress(json.dumps(unbatched))
        finally:
            deployment.stop()
            single.stop()
            if redis_url is not None:
                await delete_redis_keys(redis_url, prefix)
    return {
        "processes": "beacon serve + beacon worker" if redis_url else "beacon serve",
        "webhooks_batched": batched,
        "webhooks_one_per_post": unbatched,
        "emails": mail,
        "latency": late,
        "duplicate_emails": mailbox.duplicates,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def bench_sqlite(args: argparse.Namespace) -> Figures:
    progress("SQLite: beacon serve sends")
    return run_on_scratch_sqlite(
        lambda url, workdir: asyncio.run(bench_backend(url, workdir, None, args))
    )


def bench_postgres(args: argparse.Namespace) -> Figures:
    redis_url = configured_redis_url()
    if redis_url is None:
        return {"skipped": "no Redis (BEACON_BENCH_REDIS_URL or BEACON_TEST_REDIS_URL)"}
    progress("PostgreSQL + Redis: beacon serve and beacon worker send")
    return run_on_scratch_postgres(
        lambda url, workdir: asyncio.run(bench_backend(url, workdir, redis_url, args))
    )


def targets(name: str, figures: dict[str, Any]) -> Verdicts:
    verdicts: Verdicts = {
        f"{name}_no_duplicate_email": check(figures["duplicate_emails"], "==", 0),
    }
    if name == "postgres":
        rate = figures["webhooks_batched"]["elements_per_s"]
        verdicts[f"{name}_webhook_deliveries_per_s"] = check(rate, ">=", MIN_WEBHOOK_ELEMENTS_PER_S)
    return verdicts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=EVENTS, help="webhook elements, batched")
    parser.add_argument("--single", type=int, default=SINGLE, help="webhook elements, 1 a POST")
    parser.add_argument("--emails", type=int, default=EMAILS, help="emails sent")
    parser.add_argument("--rate", type=int, default=RATE, help="sends per second, latency")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="length of the latency run")
    add_backend_argument(parser)
    args = parser.parse_args(argv)
    if min(args.events, args.single, args.emails, args.rate) < 1 or not 1 <= args.seconds <= 600:
        parser.error("counts and --rate must be positive, --seconds in [1, 600]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_report(
        "deliveries: webhook deliveries and emails per second, send-to-arrival time",
        config=vars(args),
        runs=chosen(
            args.backend,
            sqlite=partial(bench_sqlite, args),
            postgres=partial(bench_postgres, args),
        ),
        targets_of=targets,
        fatal=("_duplicate_email",),
    )


if __name__ == "__main__":
    sys.exit(main())
