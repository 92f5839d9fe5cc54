"""One SQL text for both databases: `?` placeholders, run through a `Sql` of either driver.

Every domain's writes (identity resolution, merges, trait edits, timers...) are written once
against this protocol; `storage.sqlite` and `storage.postgres` adapt it to their driver.
Times are passed as UTC-aware datetimes and converted to each database's storage form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any, Protocol, TypeVar

PLACEHOLDER = re.compile(r"\?")
CHUNK = 500  # bound values per IN list, far under either database's limit
T = TypeVar("T")


class Sql(Protocol):
    dialect: str

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run a query; return its rows as tuples."""
        ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return how many rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run a statement once per row of arguments."""
        ...


def numbered(sql: str) -> str:
    """Rewrite `?` placeholders as PostgreSQL's `$1, $2, …`."""
    counter = iter(range(1, 10_000))
    return PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


def in_list(count: int) -> str:
    """Return `?, ?, …` for an IN list of `count` values."""
    return ", ".join("?" * count)


def chunks(items: Iterable[T], size: int = CHUNK) -> Iterable[list[T]]:
    """Split `items` into lists of at most `size`."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
