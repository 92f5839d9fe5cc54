"""JSON encoding shared by the ingest path, the bus and the stores (orjson, UTC datetimes)."""

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def dumps(value: Any) -> bytes:
    """Encode `value` as compact JSON bytes."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


def dumps_text(value: Any) -> str:
    """Encode `value` as compact JSON text."""
    return dumps(value).decode()


def loads(data: bytes | str) -> Any:
    """Decode JSON; raises `JSONDecodeError` on malformed input."""
    return orjson.loads(data)
