"""What count, sum, average, min and max keep: a small JSON tally, combined exactly.

A tally is a JSON list: count `[events]`, sum `[total]`, average `[values, total]`, min
`[least]`, max `[greatest]`; numbers are kept as their one exact text (`values.number_text`),
so combining the same tallies in any order gives the same JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from beacon.segments.values import EXACT, json_number, number_text

Tally = list[Any]
TALLY_KINDS = ("count", "sum", "average", "min", "max")


def tally_of(kind: str, amount: Decimal | None) -> Tally:
    """The tally of one event (`amount`: its property's number; None for a count)."""
    if kind == "count":
        return [1]
    assert amount is not None
    text = number_text(amount)
    return [1, text] if kind == "average" else [text]


def combine(kind: str, one: Tally, other: Tally) -> Tally:
    """The tally of everything `one` and `other` tallied."""
    if kind == "count":
        return [one[0] + other[0]]
    if kind == "sum":
        return [_add(one[0], other[0])]
    if kind == "average":
        return [one[0] + other[0], _add(one[1], other[1])]
    pick = min if kind == "min" else max
    return [number_text(pick(Decimal(one[0]), Decimal(other[0])))]


def result(kind: str, tally: Tally | None) -> Any:
    """The attribute's value from the tally of what counts (None: nothing counted)."""
    if kind == "count":
        return 0 if tally is None else tally[0]
    if tally is None:
        return 0 if kind == "sum" else None
    if kind == "average":
        return json_number(EXACT.divide(Decimal(tally[1]), Decimal(tally[0])))
    return json_number(Decimal(tally[0]))


def total(kind: str, tallies: Iterable[Tally]) -> Tally | None:
    """The tally of all `tallies`, or None when there are none."""
    found: Tally | None = None
    for tally in tallies:
        found = tally if found is None else combine(kind, found, tally)
    return found


def suffix_results(kind: str, tallies: list[Tally]) -> list[Any]:
    """For k = 1..len(tallies), the value of all but the first k tallies (in one pass)."""
    if not tallies:
        return []
    found: Tally | None = None
    results = [result(kind, None)]
    for tally in reversed(tallies[1:]):
        found = tally if found is None else combine(kind, tally, found)
        results.append(result(kind, found))
    results.reverse()
    return results


def _add(one: str, other: str) -> str:
    return number_text(EXACT.add(Decimal(one), Decimal(other)))
