"""Profile sections: what other domains add to `GET /api/profiles/{id}`, declared, not imported.

Identity sits below the domains that know more about a person (segments' memberships and
computed attributes), so it cannot call them. Instead the runtime fills a `ProfileSections`
with named readers, and the profile route adds each reader's answer under its name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

SectionReader = Callable[[str, datetime], Awaitable[Any]]
"""Reads one section of a profile (its id, now) as JSON."""

RESERVED = frozenset(
    {"id", "created_at", "updated_at", "last_seen_at", "traits", "trait_times", "consents"}
    | {"identities"}
)


class ProfileSections:
    """The named readers adding sections to a profile, in the order they were added."""

    def __init__(self) -> None:
        self._readers: dict[str, SectionReader] = {}

    def add(self, name: str, reader: SectionReader) -> None:
        """Add a section; its name must be new and not one of the profile's own fields."""
        if name in RESERVED or name in self._readers:
            raise ValueError(f"profile section {name!r} is taken")
        self._readers[name] = reader

    async def read(self, profile_id: str, now: datetime) -> dict[str, Any]:
        """Every section of the profile, by name."""
        return {name: await reader(profile_id, now) for name, reader in self._readers.items()}
