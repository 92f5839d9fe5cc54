"""Message activity sent to customers' endpoints in eSputnik's webhook format, in batches.

What the reference (eSputnik, "Webhooks") says, read literally:

- a webhook is a JSON array of events; "each element of the array will include following
  parameters": contactId (int), email (string), activityStatus (string: DELIVERED,
  UNDELIVERED, READ, UNSUBSCRIBED, CLICKED, SPAM), messageId (int), messageInstanceId (int,
  "identifier of message copy"), messageTag (string, "mark of the message"), activityDateTime
  (string, "date and time, when activity happened"), statusDescription (string), viewMessageLink
  (string, "link for the message"), clickEventLink (string, "link, which contact clicked");
- statusDescription "is returned only in case, if the status is UNDELIVERED" and holds the
  reason.

So every element has every listed field except statusDescription, which is present for
UNDELIVERED (required then) and omitted otherwise. A listed field with no value for this
activity is null, never omitted: clickEventLink is null unless the status is CLICKED (and
required then), messageTag is null for an untagged message, viewMessageLink is null when the
message has no view-online page. The reference names no date-time format: activityDateTime
is ISO 8601 in UTC with milliseconds and `Z` (`2024-05-01T12:34:56.789Z`). The three ids are
JSON integers (whole numbers 0 to 2^63 - 1; the integration maps Beacon's text ids to them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from beacon.core import jsonio

ActivityStatus = Literal["DELIVERED", "UNDELIVERED", "READ", "UNSUBSCRIBED", "CLICKED", "SPAM"]
ACTIVITY_STATUSES: tuple[ActivityStatus, ...] = get_args(ActivityStatus)
MAX_ID = jsonio.MAX_INT


@dataclass(frozen=True, slots=True, kw_only=True)
class Activity:
    """One thing that happened to one message copy, as eSputnik's webhook tells it."""

    contact_id: int
    email: str
    activity_status: ActivityStatus
    message_id: int
    message_instance_id: int
    message_tag: str | None
    activity_date_time: datetime
    status_description: str | None = None
    view_message_link: str | None = None
    click_event_link: str | None = None

    def __post_init__(self) -> None:
        for name in ("contact_id", "message_id", "message_instance_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
                raise ValueError(f"{name} must be a whole number from 0 to 2^63 - 1")
        if not isinstance(self.email, str) or "@" not in self.email:
            raise ValueError("email must be an email address")
        if self.activity_status not in ACTIVITY_STATUSES:
            raise ValueError(
                f"activity_status {self.activity_status!r} is not one of "
                f"{', '.join(ACTIVITY_STATUSES)}"
            )
        if self.activity_date_time.tzinfo is None:
            raise ValueError("activity_date_time must be timezone-aware")
        undelivered = self.activity_status == "UNDELIVERED"
        if undelivered != (self.status_description is not None):
            raise ValueError("status_description is given for UNDELIVERED, and only for it")
        clicked = self.activity_status == "CLICKED"
        if clicked != (self.click_event_link is not None):
            raise ValueError("click_event_link is given for CLICKED, and only for it")

    def to_json(self) -> dict[str, Any]:
        """Return the element of the webhook array, field for field as the reference lists."""
        element: dict[str, Any] = {
            "contactId": self.contact_id,
            "email": self.email,
            "activityStatus": self.activity_status,
            "messageId": self.message_id,
            "messageInstanceId": self.message_instance_id,
            "messageTag": self.message_tag,
            "activityDateTime": format_date_time(self.activity_date_time),
        }
        if self.status_description is not None:
            element["statusDescription"] = self.status_description
        element["viewMessageLink"] = self.view_message_link
        element["clickEventLink"] = self.click_event_link
        return element


def format_date_time(moment: datetime) -> str:
    """Return `moment` as activityDateTime text: ISO 8601, UTC, milliseconds, `Z`."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def encode_batch(activities: Iterable[Activity]) -> bytes:
    """Return the webhook body: a JSON array of activities."""
    return jsonio.dumps([activity.to_json() for activity in activities])


def read_statuses(raw: Any) -> frozenset[ActivityStatus]:
    """Read an endpoint's status filter: a list of statuses; null or absent means all of them."""
    if raw is None:
        return frozenset(ACTIVITY_STATUSES)
    if not isinstance(raw, list) or not raw:
        raise ValueError("statuses must be a non-empty list (or null for every status)")
    statuses: set[ActivityStatus] = set()
    for index, status in enumerate(raw):
        if status not in ACTIVITY_STATUSES:
            raise ValueError(
                f"statuses[{index}]: {status!r} is not one of {', '.join(ACTIVITY_STATUSES)}"
            )
        statuses.add(status)
    return frozenset(statuses)


@dataclass(frozen=True, slots=True)
class Batch:
    """Activities taken for one endpoint, with the body to post."""

    endpoint_id: str
    activities: tuple[Activity, ...]
    body: bytes


@dataclass(slots=True)
class _Pending:
    started_at: datetime
    items: list[tuple[Activity, bytes]] = field(default_factory=list)
    size: int = 2  # the array's brackets


class ActivityBatcher:
    """Groups activities per endpoint into bodies of bounded count and size, held a bounded time.

    Pure: the caller passes `now`, calls `due(now)` when `next_due()` comes, and `take`s the
    batches it then posts. An endpoint's batch is due once it holds `max_items` activities,
    once one more would pass `max_bytes`, or `max_wait` after its first activity arrived.
    """

    def __init__(
        self,
        *,
        max_items: int = 100,
        max_bytes: int = 256 * 1024,
        max_wait: timedelta = timedelta(seconds=10),
    ) -> None:
        if max_items < 1 or max_bytes < 64 or max_wait < timedelta(0):
            raise ValueError("a batcher needs max_items >= 1, max_bytes >= 64, max_wait >= 0")
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._max_wait = max_wait
        self._pending: dict[str, _Pending] = {}
        self._full: dict[str, list[_Pending]] = {}

    def add(
        self,
        *,
        endpoint_id: str,
        statuses: frozenset[ActivityStatus],
        activity: Activity,
        now: datetime,
    ) -> bool:
        """Queue `activity` for the endpoint if its status filter keeps it; say whether it did."""
        if activity.activity_status not in statuses:
            return False
        encoded = jsonio.dumps(activity.to_json())
        if len(encoded) + 2 > self._max_bytes:
            raise ValueError(
                f"one activity encodes to {len(encoded)} bytes, over the batch limit "
                f"of {self._max_bytes}"
            )
        pending = self._pending.get(endpoint_id)
        if pending is not None and pending.size + 1 + len(encoded) > self._max_bytes:
            self._full.setdefault(endpoint_id, []).append(pending)
            pending = None
        if pending is None:
            pending = self._pending[endpoint_id] = _Pending(started_at=now)
        pending.size += len(encoded) + (1 if pending.items else 0)
        pending.items.append((activity, encoded))
        if len(pending.items) >= self._max_items:
            self._full.setdefault(endpoint_id, []).append(self._pending.pop(endpoint_id))
        return True

    def due(self, now: datetime) -> list[str]:
        """Return the endpoints with a batch to post now."""
        late = now - self._max_wait
        waiting = {e for e, p in self._pending.items() if p.started_at <= late}
        return sorted(set(self._full) | waiting)

    def next_due(self) -> datetime | None:
        """Return when the next batch falls due (a full one is due at once), None if none."""
        if self._full:
            return min(p.started_at for batches in self._full.values() for p in batches)
        starts = [p.started_at for p in self._pending.values()]
        return min(starts) + self._max_wait if starts else None

    def take(self, endpoint_id: str, *, now: datetime) -> Batch | None:
        """Remove and return the endpoint's oldest due batch, None if none is due."""
        full = self._full.get(endpoint_id)
        if full:
            pending = full.pop(0)
            if not full:
                del self._full[endpoint_id]
        else:
            current = self._pending.get(endpoint_id)
            if current is None or current.started_at > now - self._max_wait:
                return None
            pending = self._pending.pop(endpoint_id)
        body = b"[" + b",".join(encoded for _, encoded in pending.items) + b"]"
        return Batch(endpoint_id, tuple(a for a, _ in pending.items), body)
