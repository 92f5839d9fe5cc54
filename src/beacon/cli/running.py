"""What every command runs with: the console, one-line errors, settings, asyncio, a session
for reads, the write path for writes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError
from rich.console import Console

from beacon.core.db import create_engine
from beacon.settings import Settings

if TYPE_CHECKING:
    from beacon.storage.transaction import Tx

T = TypeVar("T")

console = Console(soft_wrap=True)  # ids, keys and commands are copied: never break lines


class CliError(Exception):
    """An error shown to the user as one line."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"invalid configuration: {problems}") from exc


def run_async(make: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    settings = load_settings()
    return asyncio.run(make(settings))


async def with_session(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work` in one transaction of a session on an engine of its own."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    engine = create_engine(settings)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            async with session.begin():
                return await work(session)
    finally:
        await engine.dispose()


async def with_writer(settings: Settings, work: Callable[[Tx], Awaitable[T]]) -> T:
    """Run `work` in one transaction of the write path (a server may be writing meanwhile)."""
    from beacon.runtime import write_path

    async with write_path(settings) as writer:
        return await writer.run_now(work)
