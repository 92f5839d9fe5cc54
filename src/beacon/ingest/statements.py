"""The batched statements of one ingest transaction, which each database writes its own way."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import datetime

from beacon.ingest.commands import DeadLetterCommand
from beacon.ingest.plan import EventRow, NewSession


class IngestStatements(abc.ABC):
    """The batched statements of one ingest transaction, in each database's fastest form."""

    @abc.abstractmethod
    async def insert_profiles(self, rows: list[tuple[str, datetime]]) -> None: ...

    @abc.abstractmethod
    async def insert_sessions(self, rows: list[NewSession]) -> None: ...

    @abc.abstractmethod
    async def link_sessions(self, links: dict[str, str]) -> None:
        """Attach profile-less sessions to the profile they now belong to."""

    @abc.abstractmethod
    async def insert_event_keys(self, keys: list[tuple[str, str, str, datetime]]) -> set[str]:
        """Insert client-id keys not yet present; return the event ids whose key was new."""

    @abc.abstractmethod
    async def insert_events(self, rows: list[EventRow]) -> None:
        """Insert the events (with the outbox row of what the transaction enqueued, where that
        saves a round trip)."""

    @abc.abstractmethod
    async def insert_dead_letters(self, rows: Sequence[DeadLetterCommand]) -> None: ...
