"""What the benchmark's virtual clients send: Tracardi's `/track`, and a Segment library's batch.

Each payload is a `loadgen.Payload` of one client; `APIS` names them for `--protocol`.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loadgen import Payload, post_request


@dataclass(frozen=True)
class Source:
    """The source `beacon sources create` made for the run."""

    id: str
    write_key: str


# --- a poison client: events nested deeper than Beacon stores ----------------------------------

POISON_DEPTH = 252  # once failed the group commit it shared (the serializer stops at 254)


class PoisonTrack:
    """A client whose every `/track` nests an event property `POISON_DEPTH` arrays deep: each
    must be refused with 422, and must cost the other clients nothing."""

    def __init__(self, port: int, source: Source) -> None:
        head = json.dumps({"source": {"id": source.id}, "session": {"id": "poison"}})[:-1]
        nested = "[" * POISON_DEPTH + "]" * POISON_DEPTH
        body = f'{head},"events":[{{"type":"t","properties":{{"v":{nested}}}}}]}}'
        self.next_request = post_request(port, "/track", body.encode())

    def request(self) -> bytes:
        return self.next_request

    def answered(self, status: int, body: bytes) -> str | None:
        return None if status == 422 else f"poison_answered_{status}"


# --- Tracardi: /track --------------------------------------------------------------------------


def track_body(source_id: str, session_id: str, profile_id: str | None) -> bytes:
    """Return the reference's first example; the first visit sends no profile id."""
    payload: dict[str, Any] = {
        "source": {"id": source_id},
        "session": {"id": session_id},
        "context": {},
        "properties": {},
        "events": [
            {"type": "purchase-order", "properties": {"product": "Nike shoes", "quantity": 1}},
            {"type": "page-view"},
        ],
        "options": {},
    }
    if profile_id is not None:
        payload["profile"] = {"id": profile_id}
    return json.dumps(payload, separators=(",", ":")).encode()


class TracardiTrack:
    """A tracker: its own session id, and the profile id from its first answer."""

    def __init__(self, index: int, port: int, source: Source) -> None:
        self.port = port
        self.source_id = source.id
        self.session_id = f"bench-{index}-{uuid.uuid4().hex[:12]}"
        self.profile_id: str | None = None
        self.next_request = post_request(
            port, "/track", track_body(source.id, self.session_id, None)
        )

    def request(self) -> bytes:
        return self.next_request

    def answered(self, status: int, body: bytes) -> str | None:
        if status != 200:
            return f"http_{status}"
        if self.profile_id is None:
            self.adopt_profile(body)
        return None

    def adopt_profile(self, body: bytes) -> None:
        try:
            profile_id = json.loads(body)["profile"]["id"]
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(profile_id, str):
            self.profile_id = profile_id
            self.next_request = post_request(
                self.port, "/track", track_body(self.source_id, self.session_id, profile_id)
            )


# --- Segment: /v1/batch ------------------------------------------------------------------------


SEGMENT_PATH = "/v1/batch"
SEGMENT_CONTEXT = {"library": {"name": "analytics-python", "version": "2.3.2"}}
SEGMENT_SUCCESS = {"success": True}
PRODUCT = {
    "product_id": "507f1f77bcf86cd799439011",
    "sku": "G-32",
    "name": "Monopoly: 3rd Edition",
    "price": 18.99,
    "quantity": 1,
}
ORDER = {
    "order_id": "50314b8e9bcf000000000000",
    "revenue": 18.99,
    "currency": "USD",
    "products": [PRODUCT],
}


def segment_template(person_field: str, person: str) -> bytes:
    """Return a batch body of 2 track calls, with `%(first)b`, `%(second)b` for the calls'
    messageIds and `%(now)b` for their timestamp and the batch's sentAt."""

    def track(event: str, properties: dict[str, Any], message_id: str) -> dict[str, Any]:
        return {
            "type": "track",
            "event": event,
            person_field: person,
            "properties": properties,
            "messageId": f"<{message_id}>",
            "timestamp": "<now>",
            "context": SEGMENT_CONTEXT,
        }

    body = {
        "batch": [
            track("Product Added", PRODUCT, "first"),
            track("Order Completed", ORDER, "second"),
        ],
        "sentAt": "<now>",
    }
    text = json.dumps(body, separators=(",", ":")).replace("%", "%%")
    for slot in ("first", "second", "now"):
        text = text.replace(f"<{slot}>", f"%({slot})b")
    return text.encode()


class SegmentBatch:
    """A Segment library sending a batch of 2 track calls of one person per request.

    Half the clients name their person by userId, the others by anonymousId. Every call has its
    own messageId, since Beacon stores a messageId once; the body is a template filled per
    request so the load generator stays cheap.
    """

    def __init__(self, index: int, port: int, source: Source) -> None:
        self.port = port
        credentials = base64.b64encode(f"{source.write_key}:".encode()).decode()
        self.headers = {"Authorization": f"Basic {credentials}"}
        person_field = "userId" if index % 2 == 0 else "anonymousId"
        self.template = segment_template(person_field, f"bench-{index}-{uuid.uuid4().hex[:12]}")

    def request(self) -> bytes:
        slots = {
            b"first": uuid.uuid4().hex.encode(),
            b"second": uuid.uuid4().hex.encode(),
            b"now": datetime.now(UTC).isoformat(timespec="milliseconds").encode(),
        }
        return post_request(self.port, SEGMENT_PATH, self.template % slots, self.headers)

    def answered(self, status: int, body: bytes) -> str | None:
        if status != 200:
            return f"http_{status}"
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        return None if answer == SEGMENT_SUCCESS else "unexpected_answer"


@dataclass(frozen=True)
class Api:
    """An ingest API the benchmark drives: its endpoint, and the payload of one client."""

    endpoint: str
    payload: Callable[[int, int, Source], Payload]  # (client index, port, source)


APIS = {
    "tracardi": Api("POST /track", TracardiTrack),
    "segment": Api(f"POST {SEGMENT_PATH}", SegmentBatch),
}
