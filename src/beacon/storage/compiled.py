"""SQLAlchemy Core statements run in the write path (`Tx`), compiled for its database."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import Executable

from beacon.storage.transaction import Tx

# `?` placeholders, as `core.sql.Sql` takes them on both databases.
DIALECTS: dict[str, Dialect] = {
    "sqlite": sqlite.dialect(paramstyle="qmark"),
    "postgresql": postgresql.dialect(paramstyle="qmark"),  # type: ignore[no-untyped-call]
}


def compiled(statement: Executable, dialect: str) -> tuple[str, list[Any]]:
    """The SQL text of `statement` for `dialect`, with its positional arguments."""
    form = statement.compile(  # type: ignore[attr-defined,unused-ignore]
        dialect=DIALECTS[dialect], compile_kwargs={"render_postcompile": True}
    )
    params = form.construct_params()
    return str(form), [params[name] for name in form.positiontup]


async def execute_statement(tx: Tx, statement: Executable) -> int:
    """Run `statement` in `tx`; return how many rows it changed."""
    sql, args = compiled(statement, tx.dialect)
    return await tx.sql.execute(sql, *args)
