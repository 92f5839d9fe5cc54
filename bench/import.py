"""Import benchmark: `beacon import` of generated past events, as a user would run it.

For each storage backend: generate an NDJSON file of server-side events (a few thousand
people, named by user id, some by email with traits, a few devices only; realistic properties;
times spread over the last months, in order as exports are), then on a fresh database run
`beacon migrate`, `beacon sources create` and, timed, `beacon import FILE --source bench`.
Reports events/s (wall time of the import process, start-up included), the import process's
peak RSS (VmHWM, polled), and checks the stored count equals the generated count.

Prints one JSON document to stdout; progress goes to stderr. Usage:
`python bench/import.py [--events N] [--users N] [--backend sqlite|postgres|all]`.
PostgreSQL runs when BEACON_BENCH_POSTGRES_URL or BEACON_TEST_POSTGRES_URL is set (a database
is created for the run and dropped after).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from processes import beacon_cli, beacon_env, progress, status_kib
from timers import Store
from verdicts import (
    Figures,
    Verdicts,
    add_backend_argument,
    check,
    chosen,
    configured_postgres_url,
    load_average,
    run_and_report,
    run_on_scratch_postgres,
    run_on_scratch_sqlite,
)

SOURCE_ID = "bench"
SEED = 20240601
DEFAULT_EVENTS = 1_000_000
DEFAULT_USERS = 3000
HISTORY_DAYS = 300  # within the default retention, so nothing imported is already expiring
IMPORT_TIMEOUT_S = 3600.0
RSS_POLL_S = 0.05

SQLITE_MIN_EVENTS_PER_S = 50_000.0
MAX_PEAK_RSS_MIB = 500.0

PAGES = ["/", "/pricing", "/docs", "/blog/launch", "/signup", "/checkout", "/account"]
PRODUCTS = ["shoes", "shirt", "hat", "socks", "jacket", "bag"]
CAMPAIGNS = [None, "spring-sale", "newsletter", "retargeting"]
USER_AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile",
]


# --- the generated history ---------------------------------------------------------------------


def event_properties(kind: str, rng: random.Random) -> dict[str, Any]:
    if kind == "page_view":
        return {
            "url": f"https://shop.example.com{rng.choice(PAGES)}",
            "referrer": rng.choice(["https://www.google.com/", "", "https://news.example.org/"]),
            "title": "Example shop",
            "campaign": rng.choice(CAMPAIGNS),
        }
    if kind in ("product_viewed", "added_to_cart"):
        return {
            "product_id": f"sku-{rng.randrange(500):04d}",
            "category": rng.choice(PRODUCTS),
            "price": round(rng.uniform(5, 200), 2),
            "currency": "EUR",
        }
    if kind == "order_completed":
        items = rng.randrange(1, 5)
        return {
            "order_id": f"o-{rng.randrange(10**9):09d}",
            "revenue": round(rng.uniform(10, 500), 2),
            "currency": "EUR",
            "items": items,
            "products": [rng.choice(PRODUCTS) for _ in range(items)],
            "coupon": rng.choice([None, None, "WELCOME10"]),
        }
    if kind == "email_opened":
        return {"campaign": rng.choice(CAMPAIGNS[1:]), "subject": "Our spring collection"}
    return {"plan": rng.choice(["free", "pro", "team"])}


KINDS = (
    ["page_view"] * 10
    + ["product_viewed"] * 4
    + ["added_to_cart"] * 2
    + [
        "order_completed",
        "email_opened",
        "subscription_renewed",
    ]
)


def generate(path: Path, *, events: int, users: int) -> int:
    """Write `events` lines of server-side events; return the file's size in bytes."""
    rng = random.Random(SEED)
    end = datetime.now(UTC) - timedelta(days=1)
    start = end - timedelta(days=HISTORY_DAYS)
    step = (end - start) / events
    with path.open("wb") as out:
        for n in range(events):
            user = rng.randrange(users)
            kind = rng.choice(KINDS)
            event: dict[str, Any] = {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "type": kind,
                "time": (start + step * n).isoformat(timespec="milliseconds"),
                "properties": event_properties(kind, rng),
                "context": {
                    "ip": f"10.{user % 256}.{user // 256 % 256}.{rng.randrange(1, 255)}",
                    "user_agent": USER_AGENTS[user % len(USER_AGENTS)],
                },
            }
            if user % 50 == 0:  # a few devices never identified
                event["anonymous_id"] = f"device-{user}"
            else:
                event["user_id"] = f"user-{user}"
            if rng.random() < 0.02:  # now and then a sign-in that names the person's email
                event["email"] = f"customer{user}@example.com"
                event["traits"] = {"name": f"Customer {user}", "plan": rng.choice(["free", "pro"])}
            out.write(orjson.dumps(event) + b"\n")
    return path.stat().st_size


# --- running beacon ----------------------------------------------------------------------------


def timed_import(
    path: Path, *, env: dict[str, str], cwd: Path, batch_size: int | None
) -> dict[str, Any]:
    """Run `beacon import`; return its wall time, peak RSS and summary."""
    command = [sys.executable, "-m", "beacon", "import", str(path), "--source", SOURCE_ID]
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    log_path = cwd / "import.log"
    peak_kib = 0
    load_before = load_average()
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        deadline = started + IMPORT_TIMEOUT_S
        while process.poll() is None:
            peak_kib = max(peak_kib, status_kib(process.pid, "VmHWM"))
            if time.perf_counter() > deadline:
                process.kill()
            time.sleep(RSS_POLL_S)
        seconds = time.perf_counter() - started
    output = log_path.read_text(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"`beacon import` failed ({process.returncode}): {output[-2000:]}")
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "summary": output.strip().splitlines()[-4:],
    }


def bench_backend(
    name: str, database_url: str, workdir: Path, *, source: Path, args: argparse.Namespace
) -> Figures:
    events = args.events
    env = beacon_env(database_url)
    progress(f"{name}: beacon migrate, beacon sources create")
    beacon_cli(["migrate"], env=env, cwd=workdir)
    beacon_cli(["sources", "create", "history", "--id", SOURCE_ID], env=env, cwd=workdir)
    data = workdir / source.name
    os.symlink(source, data)  # the resume state is written next to the file: keep it here
    progress(f"{name}: beacon import ({events:,} events)")
    figures = timed_import(data, env=env, cwd=workdir, batch_size=args.batch_size)
    [(stored,)] = Store(database_url).fetch("SELECT count(*) FROM events WHERE imported")
    rate = events / figures["seconds"]
    progress(f"{name}: {rate:,.0f} events/s, peak RSS {figures['peak_rss_mib']} MiB")
    return {
        "events": events,
        "events_stored": int(stored),
        "events_per_s": round(rate, 1),
        **figures,
    }


def bench_sqlite(source: Path, args: argparse.Namespace) -> Figures:
    return run_on_scratch_sqlite(partial(bench_backend, "sqlite", source=source, args=args))


def bench_postgres(source: Path, args: argparse.Namespace) -> Figures:
    if configured_postgres_url() is None:
        return {"skipped": "BEACON_BENCH_POSTGRES_URL / BEACON_TEST_POSTGRES_URL is not set"}
    return run_on_scratch_postgres(partial(bench_backend, "postgres", source=source, args=args))


# --- report ------------------------------------------------------------------------------------


def targets(name: str, figures: dict[str, Any]) -> Verdicts:
    result: Verdicts = {}
    if name == "sqlite":
        result["sqlite_events_per_s"] = check(
            figures["events_per_s"], ">=", SQLITE_MIN_EVENTS_PER_S
        )
    result[f"{name}_peak_rss_mib"] = check(figures["peak_rss_mib"], "<", MAX_PEAK_RSS_MIB)
    result[f"{name}_all_stored"] = check(figures["events_stored"], "==", figures["events"])
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--users", type=int, default=DEFAULT_USERS)
    add_backend_argument(parser)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="passed to `beacon import` (default: its own)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.events <= 100_000_000:
        parser.error("--events must be in [1, 100000000]")
    if not 1 <= args.users <= args.events:
        parser.error("--users must be in [1, --events]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="beacon-bench-data-") as tmp:
        source = Path(tmp) / "history.ndjson"
        progress(f"generating {args.events:,} events of {args.users:,} people")
        size = generate(source, events=args.events, users=args.users)
        progress(f"  {size / 2**20:,.0f} MiB")
        return run_and_report(
            "beacon import of generated NDJSON server-side events",
            config={
                "events": args.events,
                "users": args.users,
                "file_mib": round(size / 2**20),
                "batch_size": args.batch_size or "the command's default",
            },
            runs=chosen(
                args.backend,
                sqlite=partial(bench_sqlite, source, args),
                postgres=partial(bench_postgres, source, args),
            ),
            targets_of=targets,
            fatal=("_all_stored",),
        )


if __name__ == "__main__":
    sys.exit(main())
