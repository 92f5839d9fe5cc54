"""Why a rule or computed attribute definition is refused: every problem, each at its JSON path.

Problem types: `malformed` (wrong JSON shape), `missing` (a required key), `unknown_key`,
`unknown_op`, `unknown_attribute`, `unknown_channel`, `not_a_list` (`in` without a list),
`empty` (an empty `all`, `any` or `in` list), `out_of_range` (negative counts, windows outside
1..3660 days), `empty_range` (`between` whose start is not before its end), `type_mismatch`
(an operator or value that does not fit what is compared: a number with a time, a time with a
number), `conflict` (two keys saying one thing), `too_deep` and `too_many` (the rule limits).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from beacon.core.errors import Problem
from beacon.core.jsonio import Path


class InvalidDefinition(ValueError):
    """A rule or attribute definition that cannot be saved; `problems` names every reason."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{_dotted(p.loc)}: {p.msg}" for p in self.problems))

    def as_json(self) -> list[dict[str, Any]]:
        return [p.as_json() for p in self.problems]


class Problems:
    """The problems found so far while one definition is read."""

    def __init__(self) -> None:
        self.found: list[Problem] = []

    def add(self, at: Path, kind: str, msg: str) -> None:
        self.found.append(Problem(at, msg, kind))

    def raise_any(self) -> None:
        """Raise `InvalidDefinition` carrying every problem found, if there is one."""
        if self.found:
            raise InvalidDefinition(self.found)

    def object_at(self, raw: Any, at: Path, what: str) -> Mapping[str, Any] | None:
        """Return `raw` if it is a JSON object, else record that it should be `what`."""
        if isinstance(raw, Mapping):
            return raw
        self.add(at, "malformed", f"{what} must be a JSON object")
        return None

    def only_keys(self, raw: Mapping[str, Any], allowed: Collection[str], at: Path) -> None:
        """Record every key of `raw` outside `allowed`, naming the keys that are allowed."""
        for key in raw:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                self.add((*at, key), "unknown_key", f"unknown key {key!r} here (known: {known})")


def _dotted(loc: Path) -> str:
    return ".".join(str(part) for part in loc)
