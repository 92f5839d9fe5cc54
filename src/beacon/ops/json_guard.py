"""ASGI middleware that refuses admin API JSON bodies no later stage could handle.

FastAPI decodes bodies with the standard `json` module, which reads `1e400` as infinity (no
database stores it), whole numbers of any size (no database column nor orjson holds one past
64 bits), text holding NUL (`\u0000`, which PostgreSQL cannot store) and nests as deep as
Python's recursion allows (schema checks then fail). Such a body is answered 422 in FastAPI's
own validation shape, naming each bad path; anything else, malformed JSON included, goes on to
FastAPI unchanged. The ingest edge refuses the same (`ingest/http.py`).
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beacon.core import jsonio

WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TOO_DEEP = f"JSON may nest at most {jsonio.MAX_DEPTH} objects or arrays deep"
NOT_FINITE = "numbers must be finite: this one is too large for a double (or NaN/Infinity)"
TOO_LARGE = f"whole numbers must lie between {jsonio.MIN_INT} and {jsonio.MAX_INT} (64 bits)"


class _Unstorable:
    """Stands where the body held a number nothing after the guard could hold."""

    def __init__(self, msg: str, type_: str) -> None:
        self.msg = msg
        self.type = type_


NON_FINITE = _Unstorable(NOT_FINITE, "not_finite")
OUT_OF_RANGE = _Unstorable(TOO_LARGE, "int_too_large")


def _number(text: str) -> float | _Unstorable:
    value = float(text)
    return value if math.isfinite(value) else NON_FINITE


def _whole(text: str) -> int | _Unstorable:
    if len(text.lstrip("-")) > len(str(jsonio.MAX_INT)):  # JSON has no leading zeros
        return OUT_OF_RANGE
    value = int(text)
    return value if jsonio.MIN_INT <= value <= jsonio.MAX_INT else OUT_OF_RANGE


def json_problems(body: bytes) -> list[dict[str, Any]]:
    """Return FastAPI-shaped problems for a body nested too deep, holding a number that is not
    finite or a whole number past 64 bits, or text with NUL."""
    try:
        value = json.loads(
            body, parse_float=_number, parse_int=_whole, parse_constant=lambda _: NON_FINITE
        )
    except RecursionError:
        return [{"loc": ["body"], "msg": TOO_DEEP, "type": "too_deep"}]
    except ValueError:  # malformed JSON (or not UTF-8): FastAPI answers that itself
        return []
    problems: list[dict[str, Any]] = []
    if isinstance(value, _Unstorable):
        problems.append({"loc": ["body"], "msg": value.msg, "type": value.type})
    for path, depth, node in jsonio.containers(value):
        if depth > jsonio.MAX_DEPTH:
            problems.append({"loc": ["body", *path], "msg": TOO_DEEP, "type": "too_deep"})
            return problems
        items = node.items() if isinstance(node, dict) else enumerate(node)
        problems.extend(
            {"loc": ["body", *path, key], "msg": item.msg, "type": item.type}
            for key, item in items
            if isinstance(item, _Unstorable)
        )
    if b"\\u0000" in body:  # a raw NUL byte is malformed JSON
        problems.extend(
            {"loc": ["body", *path], "msg": jsonio.HAS_NUL, "type": "nul_character"}
            for path in jsonio.nul_paths(value)
        )
    return problems


class JsonGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WITH_BODY:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        problems = json_problems(body) if body.strip() else []
        if problems:
            content = jsonio.dumps({"detail": problems})
            await send(
                {
                    "type": "http.response.start",
                    "status": 422,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(content)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": content})
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
