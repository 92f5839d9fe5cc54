"""ASGI middleware that refuses admin API JSON bodies no later stage could handle.

FastAPI decodes bodies with the standard `json` module, which reads `1e400` as infinity (no
database stores it) and nests as deep as Python's recursion allows (schema checks then fail).
Such a body is answered 422 in FastAPI's own validation shape, naming each bad path; anything
else, malformed JSON included, goes on to FastAPI unchanged.
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


class _NonFinite:
    """Stands where the body held a number no double can hold."""


NON_FINITE = _NonFinite()


def _number(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else NON_FINITE


def json_problems(body: bytes) -> list[dict[str, Any]]:
    """Return FastAPI-shaped problems for a body nested too deep or holding a non-finite number."""
    try:
        value = json.loads(body, parse_float=_number, parse_constant=lambda _: NON_FINITE)
    except RecursionError:
        return [{"loc": ["body"], "msg": TOO_DEEP, "type": "too_deep"}]
    except ValueError:  # malformed JSON (or not UTF-8): FastAPI answers that itself
        return []
    problems: list[dict[str, Any]] = []
    if value is NON_FINITE:
        problems.append({"loc": ["body"], "msg": NOT_FINITE, "type": "not_finite"})
    for path, depth, node in jsonio.containers(value):
        if depth > jsonio.MAX_DEPTH:
            problems.append({"loc": ["body", *path], "msg": TOO_DEEP, "type": "too_deep"})
            break
        items = node.items() if isinstance(node, dict) else enumerate(node)
        problems.extend(
            {"loc": ["body", *path, key], "msg": NOT_FINITE, "type": "not_finite"}
            for key, item in items
            if item is NON_FINITE
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
