"""Forgetting people: their runs, paths, conversions and sends, and their journeys' timers."""

from __future__ import annotations

from collections.abc import Sequence

from beacon.core.sql import in_list
from beacon.journeys.ledger import run_of
from beacon.journeys.process import date_key, inactivity_key
from beacon.storage.transaction import Tx
from beacon.timers import store as timers


async def forget_profiles(tx: Tx, profile_ids: Sequence[str]) -> int:
    """Erase the people's runs, paths, conversions and sends, and cancel their timers; return
    how many runs went."""
    if not profile_ids:
        return 0
    marks = in_list(len(profile_ids))
    rows = await tx.sql.fetch(
        f"SELECT state FROM journey_runs WHERE profile_id IN ({marks})", *profile_ids
    )
    for (state,) in rows:
        run = run_of(state)
        if run.waiting is not None:
            await timers.cancel(tx, key=run.waiting.timer_key)
    for table in ("journey_run_path", "journey_conversions", "journey_sends", "journey_runs"):
        await tx.sql.execute(f"DELETE FROM {table} WHERE profile_id IN ({marks})", *profile_ids)
    for profile_id in profile_ids:
        for prefix in (inactivity_key("", profile_id), date_key("", profile_id)):
            await tx.sql.execute("DELETE FROM timers WHERE key LIKE ?", f"{prefix}%")
    return len(rows)
