"""JSON encoding shared by the ingest path, the bus and the stores (orjson, UTC datetimes).

`MAX_DEPTH` bounds how deeply any JSON a client sends may nest. It is checked once where JSON
enters (every ingest endpoint, the import, the admin API), well inside what every later stage
handles: orjson encodes at most 254 levels, and a stored event is wrapped in a few more levels
(outbox envelopes, exports) before it is encoded again. `MIN_INT`..`MAX_INT` is the range of
whole numbers every stage holds exactly (a database's 64-bit integer, orjson).
"""

from collections.abc import Iterator
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
MAX_DEPTH = 64
MIN_INT = -(2**63)
MAX_INT = 2**63 - 1
HAS_NUL = "text may not contain the NUL character (\\u0000)"  # PostgreSQL stores none
Path = tuple[str | int, ...]


def dumps(value: Any) -> bytes:
    """Encode `value` as compact JSON bytes."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


def dumps_text(value: Any) -> str:
    """Encode `value` as compact JSON text."""
    return dumps(value).decode()


def loads(data: bytes | str) -> Any:
    """Decode JSON; raises `JSONDecodeError` on malformed input."""
    return orjson.loads(data)


def may_nest_deeper(data: bytes | str, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON text `data` could nest deeper than `limit`: a C-speed count of brackets.

    Nesting N levels takes N opening brackets, so nearly every document is cleared without
    walking its values.
    """
    if isinstance(data, str):
        return data.count("{") + data.count("[") > limit
    return data.count(b"{") + data.count(b"[") > limit


def too_deep(value: Any, limit: int = MAX_DEPTH) -> Path | None:
    """Return the path of the first object or array nested deeper than `limit`, else None."""
    for path, depth, _ in containers(value):
        if depth > limit:
            return path
    return None


def too_deep_in(data: bytes | str, value: Any, limit: int = MAX_DEPTH) -> Path | None:
    """`too_deep` for `value` decoded from `data`, walking it only when the brackets allow."""
    return too_deep(value, limit) if may_nest_deeper(data, limit) else None


def containers(value: Any) -> Iterator[tuple[Path, int, Any]]:
    """Yield (path, depth, container) for every object and array in `value`, depth first.

    Iterative, so a value nested past Python's recursion limit is walked too.
    """
    stack: list[tuple[Path, int, Any]] = [((), 1, value)]
    while stack:
        path, depth, node = stack.pop()
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            continue
        yield path, depth, node
        children = [
            ((*path, key), depth + 1, item) for key, item in items if isinstance(item, dict | list)
        ]
        stack.extend(reversed(children))


def nul_paths(value: Any, path: Path = ()) -> list[Path]:
    """The path of every text in `value` holding NUL, object keys included (a key's path ends
    with the key), in document order. Recursive: walk only a value within `MAX_DEPTH`."""
    if isinstance(value, str):
        return [path] if "\x00" in value else []
    found: list[Path] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                found.append((*path, key))
            found += nul_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += nul_paths(item, (*path, index))
    return found
