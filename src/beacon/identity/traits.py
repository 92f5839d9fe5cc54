"""Trait operations on a profile: set, set_once, increment, append, unset.

Values keep their JSON type. Each trait remembers when it was first seen and last updated
(`trait_times`); a merge uses those times to let the newer value win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

TraitOpName = Literal["set", "set_once", "increment", "append", "unset"]
Times = dict[str, dict[str, str]]


@dataclass(frozen=True, slots=True)
class TraitOp:
    op: TraitOpName
    name: str
    value: Any = None


def sets(traits: dict[str, Any]) -> list[TraitOp]:
    """Return `set` operations for a plain mapping of traits."""
    return [TraitOp("set", name, value) for name, value in traits.items()]


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def apply_trait_ops(
    values: dict[str, Any], times: Times, ops: list[TraitOp], stamp: str
) -> tuple[dict[str, Any], Times]:
    """Return new traits and trait times after `ops`; operations that do not fit are skipped.

    `increment` adds a number to a numeric trait (absent counts as 0); `append` adds a value, or
    each value of a list, to a list trait (a scalar trait becomes a list); `set_once` only sets
    a trait that has no value yet.
    """
    values = dict(values)
    times = {name: dict(t) for name, t in times.items()}
    for op in ops:
        current = values.get(op.name)
        if op.op == "unset":
            values.pop(op.name, None)
            times.pop(op.name, None)
            continue
        if op.op == "set_once" and op.name in values:
            continue
        if op.op == "increment":
            if not is_number(op.value) or not (current is None or is_number(current)):
                continue
            new = (current or 0) + op.value
        elif op.op == "append":
            items = op.value if isinstance(op.value, list) else [op.value]
            start = current if isinstance(current, list) else ([] if current is None else [current])
            new = [*start, *items]
        else:
            new = op.value
        values[op.name] = new
        times.setdefault(op.name, {"first_seen": stamp})["updated_at"] = stamp
    return values, times
