"""The `beacon` command line: serve, migrate, worker, sources, event types, retention, import,
profiles, consumers, journeys.

Every command is registered here; each lives in the module of its group. Commands import heavy
modules when they run, so `beacon --help` and every other command start fast.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from typer.exceptions import TyperException

from beacon.cli.consumers import consumers_app
from beacon.cli.event_types import event_types_app
from beacon.cli.journeys import journeys_app
from beacon.cli.profiles import profiles_app
from beacon.cli.retention import retention_app
from beacon.cli.running import CliError
from beacon.cli.segments import attributes_app, segments_app
from beacon.cli.serve import migrate, serve, worker
from beacon.cli.sources import demo, sources_app
from beacon.imports.cli import import_events

app = typer.Typer(help="Beacon: a self-hosted customer event platform.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(event_types_app, name="event-types")
app.add_typer(retention_app, name="retention")
app.add_typer(profiles_app, name="profiles")
app.add_typer(consumers_app, name="consumers")
app.add_typer(segments_app, name="segments")
app.add_typer(attributes_app, name="attributes")
app.add_typer(journeys_app, name="journeys")
app.command("import")(import_events)
app.command()(migrate)
app.command()(serve)
app.command()(worker)
app.command()(demo)


def fail(message: str) -> NoReturn:
    """Print `message` as one line on stderr and exit with status 1."""
    one_line = " ".join(message.split())
    print(f"error: {one_line}", file=sys.stderr)  # noqa: T201 - plain, never wrapped
    sys.exit(1)


def main() -> None:
    """Run the CLI; any error is printed as one line and exits with status 1."""
    from sqlalchemy.exc import DBAPIError

    try:
        app(standalone_mode=False)
    except CliError as exc:
        fail(str(exc))
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except TyperException as exc:  # usage errors and explicit exits, as Click shows them
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        sys.exit(getattr(exc, "exit_code", 2))
    except DBAPIError as exc:
        if "no such table" in str(exc.orig) or "does not exist" in str(exc.orig):
            fail("the database has no Beacon schema yet: run `beacon migrate` first")
        fail(f"database error: {str(exc.orig).splitlines()[0]}")
    except Exception as exc:  # the last resort keeps errors to one line
        first = str(exc).splitlines()[0] if str(exc) else ""
        fail(f"{type(exc).__name__}: {first}")
