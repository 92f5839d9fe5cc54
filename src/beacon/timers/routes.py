"""Admin API for the clock and the timers: `/api/clock`, `/api/clock/advance`, `/api/timers`."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status

from beacon.deps import AdminAuth, ClockDep, WriterDep
from beacon.timers import claims
from beacon.timers.clock import ClockError, ManualClock, NotManual
from beacon.timers.runner import TimerRunner
from beacon.timers.schemas import (
    ClockAdvanceIn,
    ClockAdvanceOut,
    ClockOut,
    FailingTimerOut,
    TimersOut,
)

router = APIRouter(tags=["clock and timers"], dependencies=[AdminAuth])

FAILING_LISTED = 100


def get_timer_runner(request: Request) -> TimerRunner:
    runner: TimerRunner = request.app.state.timers
    return runner


# Declared here, not in `deps.py`: deps sits below the timers in the layers.
TimerRunnerDep = Annotated[TimerRunner, Depends(get_timer_runner)]


@router.get("/api/clock", response_model=ClockOut)
async def read_clock(clock: ClockDep) -> ClockOut:
    mode = "manual" if isinstance(clock, ManualClock) else "system"
    return ClockOut(now=clock.now(), mode=mode)


@router.post("/api/clock/advance", response_model=ClockAdvanceOut)
async def advance_clock(
    data: ClockAdvanceIn, clock: ClockDep, writer: WriterDep, timers: TimerRunnerDep
) -> ClockAdvanceOut:
    """Move the manual clock forward for every process; answer once the timers that came due
    have fired."""
    if not isinstance(clock, ManualClock):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            str(NotManual("the clock is the system's: only BEACON_CLOCK=manual can be advanced")),
        )
    by = None if data.seconds is None else timedelta(seconds=data.seconds)
    try:
        moved = await clock.advance(writer, by=by, to=data.to)
    except ClockError as exc:
        field = "seconds" if data.seconds is not None else "to"
        problem = {"loc": ["body", field], "msg": str(exc), "type": exc.code}
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [problem]) from exc
    caught_up = await timers.fire_due()
    return ClockAdvanceOut(
        mode="manual",
        previous=moved.previous,
        now=moved.now,
        fired=caught_up.fired,
        still_due=caught_up.still_due,
        failing=caught_up.failing,
    )


@router.get("/api/timers", response_model=TimersOut)
async def timers_summary(timers: TimerRunnerDep) -> TimersOut:
    """How many timers are pending and failing, and the oldest failing ones with their error."""
    read = timers.database.read
    counts = await claims.count_timers(read)
    failing = await claims.failing_timers(read, limit=FAILING_LISTED)
    return TimersOut(
        pending=counts.pending,
        failing=counts.failing,
        failing_timers=[
            FailingTimerOut(
                key=timer.key,
                kind=timer.kind,
                run_at=timer.run_at,
                attempts=timer.attempts,
                last_error=error,
                retry_at=retry_at,
            )
            for timer, error, retry_at in failing
        ],
    )
