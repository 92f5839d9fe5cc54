"""`beacon consumers list|dead-letters|replay`: how far behind consumers are, what they gave up
on, and replaying it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from beacon.cli.running import CliError, console, run_async
from beacon.settings import Settings

if TYPE_CHECKING:
    from beacon.runtime import Runtime

consumers_app = typer.Typer(
    help="See consumers' lag and dead letters; replay a dead letter.", no_args_is_help=True
)


@asynccontextmanager
async def platform_of(settings: Settings) -> AsyncIterator[Runtime]:
    """Every registered consumer (plugins too) with a started write path, and no more."""
    from beacon.runtime import Runtime
    from beacon.timers.clock import clock_of

    # The deployment's clock: a replayed handler stamps its effects with its time.
    runtime = Runtime(settings=settings, clock=clock_of(settings), role="command")
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


def shown(value: object) -> str:
    return "" if value is None else str(value)


@consumers_app.command("list")
def consumers_list() -> None:
    """List consumers: messages they have yet to handle, dead letters, live workers."""
    from beacon.workers import service

    async def fetch(settings: Settings) -> list[service.ConsumerState]:
        async with platform_of(settings) as runtime, runtime.session() as session:
            workers = await service.current_workers(session=session, platform=runtime.platform)
            return await service.list_consumers(
                session=session, registry=runtime.registry, bus=runtime.bus, workers=workers
            )

    states = run_async(fetch)
    rows = [
        (s.name, s.topic, None if s.lag is None else s.lag.total, s.dead_letters, s.workers)
        for s in states
    ]
    if not sys.stdout.isatty():  # piped: tab-separated, lag empty when unknown
        for row in rows:
            print("\t".join(shown(v) for v in row))  # noqa: T201
        return
    table = Table("consumer", "topic", "lag", "dead letters", "live workers")
    for name, topic, lag, dead, workers in rows:
        table.add_row(
            escape(name), topic, "-" if lag is None else str(lag), str(dead), str(workers)
        )
    console.print(table)
    if any(lag is None for _, _, lag, _, _ in rows):
        console.print(
            "lag -: the memory bus queues live in the server; GET /api/consumers shows them",
            highlight=False,
        )


@consumers_app.command("dead-letters")
def consumers_dead_letters(
    consumer: Annotated[str | None, typer.Option(help="Only this consumer's.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=1000, help="Newest first, at most this many.")
    ] = 100,
) -> None:
    """List messages consumers gave up on after their last attempt, newest first."""
    from beacon.workers import dead_letters

    async def fetch(settings: Settings) -> list[Any]:
        async with platform_of(settings) as runtime, runtime.session() as session:
            if consumer is not None and consumer not in runtime.registry.consumers:
                known = await dead_letters.consumers_with_dead_letters(session=session)
                if consumer not in known:
                    names = ", ".join(sorted(set(runtime.registry.consumers) | known))
                    raise CliError(f"unknown consumer {consumer!r}; known: {names}")
            return list(
                await dead_letters.list_dead_letters(
                    session=session, consumer=consumer, limit=limit
                )
            )

    rows = run_async(fetch)
    if not sys.stdout.isatty():
        for r in rows:
            fields = (r.id, r.consumer, r.message_id, r.attempts, r.failed_at.isoformat())
            replayed = r.replayed_at.isoformat() if r.replayed_at else None
            print("\t".join(shown(v) for v in (*fields, replayed, r.error)))  # noqa: T201
        return
    if not rows:
        console.print("no dead letters", highlight=False)
        return
    table = Table("id", "consumer", "message", "attempts", "failed at", "replayed at", "error")
    for r in rows:
        table.add_row(
            r.id,
            escape(r.consumer),
            escape(r.message_id),
            str(r.attempts),
            r.failed_at.isoformat(timespec="seconds"),
            r.replayed_at.isoformat(timespec="seconds") if r.replayed_at else "",
            escape(r.error.splitlines()[0] if r.error else ""),
        )
    console.print(table)


@consumers_app.command("replay")
def consumers_replay(
    dead_letter_id: Annotated[str, typer.Argument(metavar="ID", help="The dead letter's id.")],
) -> None:
    """Run the consumer's handler on a dead letter's message now, once."""
    from beacon.workers import service

    async def replay(settings: Settings) -> service.Replay:
        async with platform_of(settings) as runtime, runtime.session() as session:
            try:
                return await service.replay_dead_letter(
                    session=session,
                    registry=runtime.registry,
                    writer=runtime.writer,
                    dead_letter_id=dead_letter_id,
                )
            except service.ReplayRefused as exc:
                raise CliError(str(exc)) from exc

    done = run_async(replay)
    if not done.succeeded:
        raise CliError(
            f"replaying dead letter {done.dead_letter_id} failed again ({done.error});"
            " it stays a dead letter"
        )
    console.print(
        f"replayed dead letter {done.dead_letter_id}: consumer {done.consumer} handled"
        f" message {done.message_id}",
        highlight=False,
    )
