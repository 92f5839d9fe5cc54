"""A small driver speaking Beacon's public API for the journeys tests: events through
`/api/v1/events` and `/collect`, journeys, runs, the delivery requests they made, the manual
clock.

Tests wait for what they expect through the API (`wait_for`), never for a time. To know that a
person's earlier events were handled, `barrier` sends one more event of theirs that the
`shipping-status` journey answers at once: events of a person are handled in order.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

DEADLINE_S = 60.0
POLL_S = 0.02
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], *, what: str, deadline_s: float = DEADLINE_S) -> T:
    """Poll `check` until it returns something truthy, and return it; fail after the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {deadline_s} s: {what}"
        time.sleep(POLL_S)


@dataclass
class Shop:
    """A client of one Beacon deployment, sending as the source `shop`."""

    http: httpx.Client
    write_key: str
    profiles: dict[str, str] = field(default_factory=dict)  # user id -> profile id

    @classmethod
    def open(cls, http: httpx.Client) -> Shop:
        created = http.post("/api/sources", json={"id": "shop", "name": "Shop"})
        assert created.status_code == 201, created.text
        return cls(http, http.get("/api/sources/shop").json()["write_key"])

    def send(self, user: str, event_type: str, **properties: Any) -> str:
        """Send one event of `user` through the server API; return the event's id."""
        body: dict[str, Any] = {"id": str(uuid.uuid4()), "type": event_type, "user_id": user}
        body["properties"] = properties
        answer = self.http.post(
            "/api/v1/events", json=body, headers={"Authorization": f"Bearer {self.write_key}"}
        )
        assert answer.status_code == 200, answer.text
        stored = answer.json()["events"][0]
        self.profiles[user] = stored["profile_id"]
        return str(stored["id"])

    def collect(self, event_type: str, **properties: Any) -> None:
        """Send an event naming no person (`/collect`), as a back end's webhook would."""
        answer = self.http.post(f"/collect/{event_type}/shop", json=properties)
        assert answer.status_code == 200, answer.text

    def barrier(self, user: str) -> None:
        """Return once every event `user` sent before has been handled by the journeys."""
        marker = f"barrier-{uuid.uuid4().hex[:8]}"
        self.send(user, "SHIPPING_STATUS", status=marker, order_nr="-")
        wait_for(
            lambda: any(
                m["variables"]["event"]["properties"]["status"] == marker
                for m in self.messages("shipping-status", user)
            ),
            what=f"the barrier of {user}",
        )

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        answer = self.http.post("/api/journeys", json=document)
        assert answer.status_code in (200, 201), answer.text
        result: dict[str, Any] = answer.json()
        return result

    def messages(self, journey: str, user: str) -> list[dict[str, Any]]:
        """The delivery requests `journey` made for `user`, oldest first."""
        answer = self.http.get(
            f"/api/journeys/{journey}/messages", params={"profile_id": self.profiles[user]}
        )
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()
        return found

    def wait_messages(self, journey: str, user: str, count: int) -> list[dict[str, Any]]:
        """Wait until `journey` made at least `count` requests for `user`; return them."""

        def enough() -> list[dict[str, Any]] | None:
            found = self.messages(journey, user)
            return found if len(found) >= count else None

        return wait_for(enough, what=f"{count} message(s) of {journey} for {user}")

    def runs(self, user: str, journey: str | None = None) -> list[dict[str, Any]]:
        """The person's runs (of `journey`), newest first, with their paths."""
        answer = self.http.get(f"/api/profiles/{self.profiles[user]}/journeys")
        assert answer.status_code == 200, answer.text
        return [r for r in answer.json() if journey is None or r["journey"] == journey]

    def advance(self, seconds: float) -> dict[str, Any]:
        """Move the manual clock; every timer due by then has fired when this returns."""
        answer = self.http.post("/api/clock/advance", json={"seconds": seconds}, timeout=120.0)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result


def subjects(messages: list[dict[str, Any]]) -> list[str]:
    """What each message says first: its email subject, push title or text."""
    return [
        m["content"].get("subject") or m["content"].get("title") or m["content"].get("text")
        for m in messages
    ]
