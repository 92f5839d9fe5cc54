"""A whole-table read cache that reloads after a time-to-live, one reload at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from beacon.core.clock import Clock

K = TypeVar("K")
V = TypeVar("V")


class RefreshingMap(Generic[K, V]):
    """Holds `loader()`'s mapping; reloads when older than `ttl` seconds or invalidated."""

    def __init__(self, loader: Callable[[], Awaitable[dict[K, V]]], *, ttl: float, clock: Clock):
        self._loader = loader
        self._ttl = ttl
        self._clock = clock
        self._value: dict[K, V] | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Make the next read reload (called after this process changes the table)."""
        self._value = None

    def _fresh(self) -> dict[K, V] | None:
        if self._value is None:
            return None
        if self._clock.now().timestamp() - self._loaded_at > self._ttl:
            return None
        return self._value

    async def get(self, key: K) -> V | None:
        """Return the value for `key`, reloading first if the cache is stale."""
        return (await self.current()).get(key)

    async def current(self) -> dict[K, V]:
        """Return the whole mapping, reloading first if stale."""
        value = self._fresh()
        if value is not None:
            return value
        async with self._lock:
            value = self._fresh()
            if value is None:
                value = await self._loader()
                self._value = value
                self._loaded_at = self._clock.now().timestamp()
            return value
