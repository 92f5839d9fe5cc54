"""Property filters: which of a type's events count, by their properties (`where`, ANDed).

A filter is `{"property": PATH, "op": OP, "value": VALUE}`: PATH is dotted ("item.sku" reads
`{"item": {"sku": …}}`), OP one of `comparisons.FILTER_OPS` (no time operators: an event
either counts or not, whenever it is looked at).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from beacon.core.jsonio import Path
from beacon.segments.comparisons import FILTER_OPS, Comparison, matches, read_comparison
from beacon.segments.validation import Problems
from beacon.segments.values import PropertyPath, lookup, parse_path, path_text


@dataclass(frozen=True, slots=True)
class PropertyFilter:
    path: PropertyPath
    comparison: Comparison

    def as_json(self) -> dict[str, Any]:
        return {"property": path_text(self.path), **self.comparison.as_json()}


def read_where(raw: Any, *, at: Path, problems: Problems) -> tuple[PropertyFilter, ...]:
    """Return the filters of a `where` list, recording each problem (at its index) on the way."""
    if not isinstance(raw, list):
        problems.add(at, "malformed", "where must be a list of property filters")
        return ()
    filters = []
    for index, item in enumerate(raw):
        found = _read_filter(item, at=(*at, index), problems=problems)
        if found is not None:
            filters.append(found)
    return tuple(filters)


def _read_filter(raw: Any, *, at: Path, problems: Problems) -> PropertyFilter | None:
    item = problems.object_at(raw, at, "a property filter")
    if item is None:
        return None
    problems.only_keys(item, ("property", "op", "value"), at)
    path = parse_path(item.get("property"))
    if "property" not in item:
        problems.add((*at, "property"), "missing", "property is required")
    elif path is None:
        problems.add(
            (*at, "property"), "malformed", "property must be a dotted path such as item.sku"
        )
    comparison = read_comparison(
        item,
        ops=FILTER_OPS,
        value_kind="any",
        subject=f"property {item.get('property')!r}",
        at=at,
        problems=problems,
    )
    if path is None or comparison is None:
        return None
    return PropertyFilter(path, comparison)


def match_all(filters: Iterable[PropertyFilter], properties: Mapping[str, Any]) -> bool:
    """Whether an event's properties satisfy every filter."""
    return all(matches(f.comparison, lookup(properties, f.path)) for f in filters)
