"""`beacon profiles export|erase`: what Beacon holds about a person."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from beacon.cli.running import CliError, console, run_async, with_session
from beacon.core import jsonio
from beacon.settings import Settings

profiles_app = typer.Typer(
    help="Export or erase what Beacon holds about a person.", no_args_is_help=True
)


@profiles_app.command("export")
def profiles_export(
    profile_id: Annotated[str, typer.Argument(help="Profile id (a merged id names its survivor).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE, not standard output.")
    ] = None,
) -> None:
    """Write the person's profile, identities, sessions and events as JSON."""
    from beacon.events.export import export_profile

    async def fetch(settings: Settings) -> dict[str, Any] | None:
        return await with_session(
            settings, lambda session: export_profile(session=session, profile_id=profile_id)
        )

    document = run_async(fetch)
    if document is None:
        raise CliError(f"profile {profile_id!r} not found")
    data = jsonio.dumps(document) + b"\n"
    if output is None:
        sys.stdout.buffer.write(data)
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror}") from exc
    console.print(
        f"exported profile {document['profile']['id']} to {output}: events"
        f" {len(document['events'])}, sessions {len(document['sessions'])}, identities"
        f" {len(document['identities'])}",
        highlight=False,
    )


@profiles_app.command("erase")
def profiles_erase(
    profile_id: Annotated[str, typer.Argument(help="Profile id (a merged id names its survivor).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Erase without asking.")] = False,
) -> None:
    """Erase a person everywhere (profile, merged profiles, identities, sessions, events).

    Irreversible. What remains is an audit record: a digest of the id, the time and the counts.
    """
    from beacon.identity import erasure
    from beacon.identity import service as identity_service
    from beacon.runtime import write_path
    from beacon.storage.transaction import Tx

    async def resolve(settings: Settings) -> str | None:
        async def work(session: Any) -> str | None:
            found = await identity_service.get_profile(session=session, profile_id=profile_id)
            return None if found is None else found.id

        return await with_session(settings, work)

    target = run_async(resolve)
    if target is None:
        raise CliError(f"profile {profile_id!r} not found")
    merged = "" if target == profile_id else f" (into which {profile_id} was merged)"
    if not yes:
        question = (
            f"erase profile {target}{merged} with its events, sessions and identities?"
            " This cannot be undone"
        )
        try:
            confirmed = typer.confirm(question)
        except typer.Abort:  # end of input or Ctrl-C: the prompt's line is still open
            console.print()
            confirmed = False
        if not confirmed:
            raise CliError("not confirmed: nothing was erased (--yes erases without asking)")

    async def erase(settings: Settings) -> dict[str, Any] | None:
        # The API's single write path, in this process: a running server may write meanwhile.
        async with write_path(settings) as writer:

            async def work(tx: Tx) -> dict[str, Any] | None:
                return await erasure.erase_profile(tx, profile_id=target)

            return await writer.run_now(work)

    record = run_async(erase)
    if record is None:  # erased by someone else since it was looked up
        raise CliError(f"profile {profile_id!r} not found")
    counts = record["counts"]
    console.print(
        f"erased profile {target}{merged}: events {counts['events']}, sessions"
        f" {counts['sessions']}, identities {counts['identities']}, profiles {counts['profiles']},"
        f" refused payloads {counts['dead_letters']}",
        highlight=False,
    )
    console.print(
        f"kept audit record {record['id']} (subject sha256 {record['subject']})", highlight=False
    )
