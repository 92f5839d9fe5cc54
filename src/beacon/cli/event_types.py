"""`beacon event-types apply FILE`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from beacon.cli.running import CliError, console, run_async, with_writer
from beacon.core import jsonio
from beacon.settings import Settings

if TYPE_CHECKING:
    from beacon.storage.transaction import Tx

event_types_app = typer.Typer(help="Manage event types and their schemas.", no_args_is_help=True)


@event_types_app.command("apply")
def event_types_apply(
    file: Annotated[Path, typer.Argument(help="JSON file: {name: {schema, mode, description}}.")],
) -> None:
    """Create or replace the event types defined in FILE."""
    from beacon.events.event_types import InvalidSchema, put_event_type
    from beacon.events.schemas import EventTypeIn

    try:
        raw = jsonio.loads(file.read_bytes())
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror}") from exc
    except jsonio.JSONDecodeError as exc:
        raise CliError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise CliError(f"{file} must hold a JSON object mapping event type names to definitions")
    too_deep = jsonio.too_deep(raw)
    if too_deep is not None:
        where = ".".join(map(str, too_deep))
        raise CliError(f"{file}: {where}: nests deeper than {jsonio.MAX_DEPTH} levels")
    definitions: dict[str, EventTypeIn] = {}
    for name, value in raw.items():
        try:
            definitions[name] = EventTypeIn.model_validate(value)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "definition"
            raise CliError(f"{file}: event type {name!r}: {where}: {error['msg']}") from exc

    async def apply(settings: Settings) -> None:
        async def work(tx: Tx) -> None:  # all or nothing: one transaction
            for name, data in definitions.items():
                try:
                    await put_event_type(tx, name=name, data=data)
                except InvalidSchema as exc:
                    raise CliError(str(exc)) from exc

        await with_writer(settings, work)

    run_async(apply)
    console.print(f"applied {len(definitions)} event type(s): {', '.join(definitions)}")
