"""Just enough HTTP for the ingest edge, straight on ASGI: read a bounded body, answer JSON.

The ingest endpoints are the hot path, so they skip Starlette's request and response objects:
headers are decoded once into a dict, the body is read with its size bound, and the answer is
two ASGI messages.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from beacon.core import jsonio
from beacon.core.errors import ClientError, Problem

SUPPORTED_ENCODINGS = {"", "identity", "gzip", "x-gzip"}
JSON_HEADERS = [(b"content-type", b"application/json")]
TOO_DEEP = f"JSON may nest at most {jsonio.MAX_DEPTH} objects or arrays deep"


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    receive: Receive

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> HttpRequest:
        raw_query: bytes = scope.get("query_string", b"")
        return cls(
            method=scope["method"],
            path=scope["path"],
            query=dict(parse_qsl(raw_query.decode("latin-1"))) if raw_query else {},
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            receive=receive,
        )

    def flag(self, name: str) -> bool:
        """Return whether query parameter `name` is set to a true value."""
        return self.query.get(name, "").lower() in ("true", "1", "yes")


def _too_large(limit: int, what: str) -> ClientError:
    return ClientError(413, "payload_too_large", f"{what} exceeds the limit of {limit} bytes")


async def read_body(request: HttpRequest, *, limit: int) -> bytes:
    """Return the request body, gunzipped if sent so; 413 past `limit` bytes either way."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, "request body")
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in SUPPORTED_ENCODINGS:
        raise ClientError(
            415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported"
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientError(400, "client_disconnected", "the client went away mid-request")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, "request body")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if encoding in ("gzip", "x-gzip"):
        return gunzip(body, limit=limit)
    return body


def gunzip(data: bytes, *, limit: int) -> bytes:
    """Decompress gzip `data`, refusing (413) output larger than `limit` (gzip bombs)."""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ClientError(400, "invalid_gzip", f"body is not valid gzip: {exc}") from exc
    if len(out) > limit or decompressor.unconsumed_tail:
        raise _too_large(limit, "decompressed request body")
    if not decompressor.eof:
        raise ClientError(400, "invalid_gzip", "gzip body is truncated")
    return out


def decode_json(body: bytes) -> Any:
    """Decode a JSON body; 400 naming the position of the first syntax error."""
    if not body.strip():
        raise ClientError(400, "invalid_json", "request body is empty; a JSON object is expected")
    try:
        value = jsonio.loads(body)
    except jsonio.JSONDecodeError as exc:
        raise ClientError(
            400,
            "invalid_json",
            "request body is not valid JSON",
            [Problem(loc=("body",), msg=str(exc), type="json_invalid")],
        ) from exc
    return value


def refuse_deep_nesting(data: bytes, value: Any) -> None:
    """Refuse (422) JSON nesting deeper than `jsonio.MAX_DEPTH`, naming where it goes too deep."""
    path = jsonio.too_deep_in(data, value)
    if path is not None:
        where = ".".join(map(str, path))
        raise ClientError(
            422,
            "too_deep",
            f"{where}: {TOO_DEEP}",
            [Problem(loc=path, msg=TOO_DEEP, type="too_deep")],
        )


def refuse_unstorable(body: bytes, value: Any) -> None:
    """Refuse (422) JSON that no later stage could store: nested past `jsonio.MAX_DEPTH`, or
    holding text with NUL. Adapters call it right after authenticating, so the refusal is kept
    as a dead letter of the source, and before anything walks or encodes the value."""
    refuse_deep_nesting(body, value)
    refuse_nul(body, value)


def refuse_nul(body: bytes, value: Any) -> None:
    """Refuse (422) text holding the NUL character, which PostgreSQL cannot store."""
    if b"\\u0000" not in body:
        return
    problems = [
        Problem(loc=_printable(path), msg=jsonio.HAS_NUL, type="nul_character")
        for path in jsonio.nul_paths(value)
    ]
    if problems:
        raise ClientError(422, "nul_character", "the payload contains NUL characters", problems)


def _printable(path: jsonio.Path) -> tuple[str | int, ...]:
    return tuple(p.replace("\x00", "\\u0000") if isinstance(p, str) else p for p in path)


async def send_json(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer with `body` as JSON."""
    content = jsonio.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *JSON_HEADERS,
                (b"content-length", str(len(content)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})


async def send_empty(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    """Answer with no body (204 and the like)."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
