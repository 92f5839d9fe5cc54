"""CSV files: which column holds what, set by flags; the other columns become properties.

Column names default to the NDJSON field names, so a file with a header such as
`id,type,time,user_id,email,plan,amount` imports without flags: `plan` and `amount` become
properties. Flags rename (`--time-column created_at`), fix the type of every row
(`--event-type order_completed`), choose the properties (`--property COLUMN[=NAME]`, repeated:
only those columns, optionally renamed) and traits (`--trait COLUMN[=NAME]`). Cells are text;
`--infer-types` reads cells that are JSON numbers, `true` or `false` as such. Empty cells are
left out.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from beacon.core import jsonio
from beacon.imports.rows import (
    BadRow,
    ImportRow,
    email_address,
    event_id,
    event_type,
    identity,
    parse_time,
)
from beacon.ingest.pipeline import RawEvent

_JSON_SCALAR = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false")


class ColumnError(ValueError):
    """The mapping does not fit the file's header."""


def column_spec(text: str) -> tuple[str, str]:
    """Read `COLUMN[=NAME]` as (column, name)."""
    column, equals, name = text.partition("=")
    if not column or (equals and not name):
        raise ColumnError(f"{text!r}: expected COLUMN or COLUMN=NAME")
    return column, name or column


@dataclass(frozen=True, slots=True)
class CsvColumns:
    """The column-mapping flags; a column left as None is used under its default name if present."""

    type: str | None = None
    event_type: str | None = None  # every row's type, instead of a type column
    time: str | None = None
    id: str | None = None
    user_id: str | None = None
    email: str | None = None
    anonymous_id: str | None = None
    properties: tuple[tuple[str, str], ...] = ()  # (column, property name); () means the rest
    traits: tuple[tuple[str, str], ...] = ()
    infer_types: bool = False
    delimiter: str = ","

    def describe(self) -> str:
        """A stable text of the mapping (part of the resume state's key)."""
        return jsonio.dumps_text(
            [
                self.type,
                self.event_type,
                self.time,
                self.id,
                self.user_id,
                self.email,
                self.anonymous_id,
                self.properties,
                self.traits,
                self.infer_types,
                self.delimiter,
            ]
        )

    def bind(self, header: list[str]) -> CsvLayout:
        """Find each mapped column in `header`; raise `ColumnError` naming what is missing."""
        duplicates = sorted(name for name, n in Counter(header).items() if n > 1)
        if duplicates:
            raise ColumnError(f"the header repeats column names: {', '.join(duplicates)}")
        where = {name: index for index, name in enumerate(header)}

        def find(
            given: str | None, default: str, flag: str, *, required: bool = False
        ) -> int | None:
            name = given or default
            if name in where:
                return where[name]
            if given is not None or required:
                known = ", ".join(header)
                raise ColumnError(f"no column {name!r} ({flag}); the header has: {known}")
            return None

        type_index = (
            None if self.event_type else find(self.type, "type", "--type-column", required=True)
        )
        time_index = find(self.time, "time", "--time-column", required=True)
        people = [
            find(self.user_id, "user_id", "--user-id-column"),
            find(self.email, "email", "--email-column"),
            find(self.anonymous_id, "anonymous_id", "--anonymous-id-column"),
        ]
        if all(index is None for index in people):
            raise ColumnError(
                "no column names the person: add user_id, email or anonymous_id, or name one with"
                " --user-id-column, --email-column or --anonymous-id-column"
            )
        id_index = find(self.id, "id", "--id-column")
        traits = tuple((find(c, c, "--trait") or 0, n) for c, n in self.traits)
        mapped = {type_index, time_index, id_index, *people, *(i for i, _ in traits)}
        if self.properties:
            properties = tuple((find(c, c, "--property") or 0, n) for c, n in self.properties)
        else:
            properties = tuple((i, name) for i, name in enumerate(header) if i not in mapped)
        return CsvLayout(
            width=len(header),
            type_index=type_index,
            fixed_type=self.event_type,
            time_index=time_index or 0,
            id_index=id_index,
            user_id_index=people[0],
            email_index=people[1],
            anonymous_id_index=people[2],
            properties=properties,
            traits=traits,
            infer_types=self.infer_types,
        )


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """A mapping bound to one file's header: column indexes."""

    width: int
    type_index: int | None
    fixed_type: str | None
    time_index: int
    id_index: int | None
    user_id_index: int | None
    email_index: int | None
    anonymous_id_index: int | None
    properties: tuple[tuple[int, str], ...]
    traits: tuple[tuple[int, str], ...]
    infer_types: bool

    def row(self, values: list[str], derive: Callable[[], str]) -> ImportRow:
        """Map one record's fields to a row."""
        if len(values) != self.width:
            raise BadRow(
                "invalid_csv", f"the record has {len(values)} fields, the header {self.width}"
            )
        if any("\x00" in value for value in values):
            raise BadRow("nul_character", "text may not contain NUL (\\u0000)")
        kind = event_type(
            self.fixed_type if self.type_index is None else values[self.type_index], "type"
        )
        user_id = identity(self._get(values, self.user_id_index), "user_id")
        email = email_address(self._get(values, self.email_index))
        anonymous_id = identity(self._get(values, self.anonymous_id_index), "anonymous_id")
        if user_id is None and email is None and anonymous_id is None:
            raise BadRow("no_person", "name the person: user_id, email or anonymous_id")
        when = values[self.time_index]
        if not when:
            raise BadRow("missing_time", "time: an imported event needs the time it happened")
        external_id = event_id(self._get(values, self.id_index)) or derive()
        return ImportRow(
            RawEvent(
                kind,
                self._fields(values, self.properties),
                {},
                external_id=external_id,
                time=parse_time(when),
            ),
            user_id=user_id,
            email=email,
            anonymous_id=anonymous_id,
            traits=self._fields(values, self.traits),
        )

    @staticmethod
    def _get(values: list[str], index: int | None) -> str | None:
        return None if index is None else values[index]

    def _fields(self, values: list[str], columns: tuple[tuple[int, str], ...]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for index, name in columns:
            value = values[index]
            if value:
                fields[name] = cell(value) if self.infer_types else value
        return fields


def cell(value: str) -> Any:
    """Read a cell that is a JSON number, `true` or `false` as such; anything else as text."""
    return jsonio.loads(value) if _JSON_SCALAR.fullmatch(value) else value
