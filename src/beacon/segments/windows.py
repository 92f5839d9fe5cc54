"""Rolling windows: what a windowed attribute counted, kept in time buckets until it leaves.

An event counts while now is less than `window_days` after it (an event stamped after now
counts already). Events are kept in buckets of a fixed width aligned to the Unix epoch; a
bucket [start, start + width) leaves the window at start + width + window, when the last event
it may hold has left: a change is at most one bucket width late, never early.

The bound, and what it costs: a window of up to 31 days keeps minute buckets (a change at most
a minute late; a state holds at most one bucket per minute of the window, 44,640 for 31 days);
a window of up to 366 days keeps hour buckets (at most an hour late; 8,784 at most); a longer
one, to 3,660 days, day buckets (at most a day late; 3,660 at most). Events stamped in the
future add their own buckets. A bucket's precision only matters when it leaves the window, at
the window's age, so the width follows the window's length (finer buckets for recent events
would buy nothing once they are old).

The horizon is the latest `now` the state was given, as a minute. Buckets that have left the
window by then are dropped, and so is an event arriving after its bucket has left: the state
is a function of the events and the horizon alone, whatever order the events came in. Values
are exact for any now at or after the horizon (time does not go backwards).

State of count, sum, average, min and max: `{"horizon": MINUTE, "buckets": [[START, *TALLY],
...]}`, ordered by START (minutes since the epoch; the tally as in `tallies`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from beacon.segments.tallies import Tally, combine, result, suffix_results, total
from beacon.segments.values import minute_of, minute_start

State = dict[str, Any]
StateView = Mapping[str, Any]
MINUTES_PER_DAY = 24 * 60


def bucket_width(window_days: int) -> int:
    """Return the width in minutes of a window's buckets (see the module docstring)."""
    if window_days <= 31:
        return 1
    if window_days <= 366:
        return 60
    return MINUTES_PER_DAY


def bucket_of(moment: datetime, window_days: int) -> int:
    """Return the start (a minute) of the bucket `moment` falls in."""
    width = bucket_width(window_days)
    return minute_of(moment) // width * width


def leaves_at(start: int, window_days: int) -> int:
    """Return the minute a bucket starting at `start` leaves the window."""
    return start + bucket_width(window_days) + window_days * MINUTES_PER_DAY


def horizon(state: StateView, now: datetime) -> int:
    """Return the state's horizon once it has been given `now`."""
    minute = minute_of(now)
    return max(state["horizon"], minute) if "horizon" in state else minute


def add_tally(
    kind: str,
    window_days: int,
    state: StateView,
    occurred_at: datetime,
    tally: Tally,
    now: datetime,
) -> State:
    """Return the state with one event's tally added to its bucket, if it is still in the window."""
    seen = horizon(state, now)
    buckets = [b for b in state.get("buckets", ()) if leaves_at(b[0], window_days) > seen]
    start = bucket_of(occurred_at, window_days)
    if leaves_at(start, window_days) > seen:
        index = bisect.bisect_left(buckets, start, key=lambda b: b[0])
        if index < len(buckets) and buckets[index][0] == start:
            buckets[index] = [start, *combine(kind, buckets[index][1:], tally)]
        else:
            buckets.insert(index, [start, *tally])
    return {"horizon": seen, "buckets": buckets}


def live_buckets(window_days: int, state: StateView, now: datetime) -> list[list[Any]]:
    """Return the buckets still in the window at `now`, oldest first."""
    minute = minute_of(now)
    return [b for b in state.get("buckets", ()) if leaves_at(b[0], window_days) > minute]


def tally_value(kind: str, window_days: int, state: StateView, now: datetime) -> Any:
    """Return the value at `now` of a windowed count, sum, average, min or max."""
    return result(kind, total(kind, (b[1:] for b in live_buckets(window_days, state, now))))


def tally_changes(
    kind: str, window_days: int, state: StateView, now: datetime
) -> Iterator[tuple[datetime, Any]]:
    """Yield (when, value from then on) for each change time alone will make, in order."""
    live = live_buckets(window_days, state, now)
    tallies: list[Tally] = [b[1:] for b in live]
    previous = result(kind, total(kind, tallies))
    for bucket, after in zip(live, suffix_results(kind, tallies), strict=True):
        if after != previous:
            yield minute_start(leaves_at(bucket[0], window_days)), after
            previous = after
