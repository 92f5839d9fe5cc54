"""eSputnik activity elements field for field, batches bounded in count, size and time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from beacon.deliveries.activity import (
    ACTIVITY_STATUSES,
    Activity,
    ActivityBatcher,
    encode_batch,
    read_statuses,
)

AT = datetime(2025, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)
ALL = frozenset(ACTIVITY_STATUSES)


def activity(status: str = "READ", **changes: Any) -> Activity:
    fields: dict[str, Any] = {
        "contact_id": 1001,
        "email": "ann@example.com",
        "activity_status": status,
        "message_id": 77,
        "message_instance_id": 900001,
        "message_tag": "spring-sale",
        "activity_date_time": AT,
        "view_message_link": "https://links.shop.test/m/view/t0k",
    }
    if status == "UNDELIVERED":
        fields["status_description"] = "550 5.1.1 mailbox unavailable"
    if status == "CLICKED":
        fields["click_event_link"] = "https://shop.test/sale"
    return Activity(**{**fields, **changes})


def test_an_element_has_every_field_of_the_reference_with_its_type() -> None:
    element = activity("CLICKED").to_json()

    assert list(element) == [
        "contactId",
        "email",
        "activityStatus",
        "messageId",
        "messageInstanceId",
        "messageTag",
        "activityDateTime",
        "viewMessageLink",
        "clickEventLink",
    ]
    assert element == {
        "contactId": 1001,
        "email": "ann@example.com",
        "activityStatus": "CLICKED",
        "messageId": 77,
        "messageInstanceId": 900001,
        "messageTag": "spring-sale",
        "activityDateTime": "2025-03-01T12:30:05.123Z",
        "viewMessageLink": "https://links.shop.test/m/view/t0k",
        "clickEventLink": "https://shop.test/sale",
    }


def test_status_description_is_there_for_undelivered_only() -> None:
    undelivered = activity("UNDELIVERED").to_json()
    read = activity("READ").to_json()

    assert undelivered["statusDescription"] == "550 5.1.1 mailbox unavailable"
    assert "statusDescription" not in read
    assert read["clickEventLink"] is None
    assert activity(message_tag=None, view_message_link=None).to_json()["messageTag"] is None


def test_times_are_sent_in_utc_with_milliseconds() -> None:
    kyiv = timezone(timedelta(hours=2))
    element = activity(activity_date_time=datetime(2025, 3, 1, 14, 0, 0, 5000, tzinfo=kyiv))

    assert element.to_json()["activityDateTime"] == "2025-03-01T12:00:00.005Z"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"contact_id": "1001"}, "contact_id must be a whole number"),
        ({"message_id": True}, "message_id must be a whole number"),
        ({"message_instance_id": -1}, "message_instance_id must be a whole number"),
        ({"message_id": 2**63}, "message_id must be a whole number"),
        ({"email": "ann"}, "email must be an email address"),
        ({"activity_status": "OPENED"}, "'OPENED' is not one of DELIVERED, UNDELIVERED"),
        ({"activity_date_time": datetime(2025, 1, 1)}, "timezone-aware"),  # noqa: DTZ001
        ({"status_description": "why"}, "status_description is given for UNDELIVERED"),
        ({"click_event_link": "https://x.test"}, "click_event_link is given for CLICKED"),
    ],
)
def test_bad_activities_are_refused_naming_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        activity(**changes)


def test_a_status_filter_is_a_list_of_known_statuses_or_null_for_all() -> None:
    assert read_statuses(None) == ALL
    assert read_statuses(["READ", "CLICKED", "READ"]) == {"READ", "CLICKED"}
    with pytest.raises(ValueError, match=r"statuses\[1\]: 'OPEN' is not one of"):
        read_statuses(["READ", "OPEN"])
    with pytest.raises(ValueError, match="non-empty list"):
        read_statuses([])


def test_a_batch_is_a_json_array_posted_when_full() -> None:
    batcher = ActivityBatcher(max_items=2, max_wait=timedelta(seconds=10))
    for contact in (1, 2, 3):
        batcher.add(endpoint_id="crm", statuses=ALL, activity=activity(contact_id=contact), now=AT)

    assert batcher.due(AT) == ["crm"]
    batch = batcher.take("crm", now=AT)
    assert batch is not None
    assert [a["contactId"] for a in orjson.loads(batch.body)] == [1, 2]
    assert batch.body == encode_batch(batch.activities)
    assert batcher.take("crm", now=AT) is None
    assert batcher.due(AT) == []
    assert batcher.next_due() == AT + timedelta(seconds=10)


def test_a_batch_not_full_waits_its_time() -> None:
    batcher = ActivityBatcher(max_items=100, max_wait=timedelta(seconds=10))
    batcher.add(endpoint_id="crm", statuses=ALL, activity=activity(), now=AT)
    batcher.add(endpoint_id="crm", statuses=ALL, activity=activity(), now=AT + timedelta(seconds=4))

    assert batcher.due(AT + timedelta(seconds=9)) == []
    assert batcher.take("crm", now=AT + timedelta(seconds=9)) is None
    assert batcher.next_due() == AT + timedelta(seconds=10)
    assert batcher.due(AT + timedelta(seconds=10)) == ["crm"]
    batch = batcher.take("crm", now=AT + timedelta(seconds=10))
    assert batch is not None and len(batch.activities) == 2
    assert batcher.next_due() is None


def test_a_batch_never_passes_its_size_in_bytes() -> None:
    one = len(encode_batch([activity()]))
    batcher = ActivityBatcher(max_items=100, max_bytes=2 * one)
    for _ in range(5):
        batcher.add(endpoint_id="crm", statuses=ALL, activity=activity(), now=AT)

    sizes = []
    while (batch := batcher.take("crm", now=AT + timedelta(minutes=1))) is not None:
        assert len(batch.body) <= 2 * one
        sizes.append(len(batch.activities))
    assert sizes == [2, 2, 1]
    with pytest.raises(ValueError, match="over the batch limit"):
        ActivityBatcher(max_bytes=64).add(
            endpoint_id="crm", statuses=ALL, activity=activity(), now=AT
        )


def test_each_endpoint_gets_the_statuses_it_asked_for_in_its_own_batches() -> None:
    batcher = ActivityBatcher(max_items=10, max_wait=timedelta(0))
    clicks_only = read_statuses(["CLICKED"])
    for status in ("READ", "CLICKED", "UNDELIVERED"):
        kept = batcher.add(endpoint_id="crm", statuses=ALL, activity=activity(status), now=AT)
        clicked = batcher.add(
            endpoint_id="ads", statuses=clicks_only, activity=activity(status), now=AT
        )
        assert kept and clicked == (status == "CLICKED")

    assert batcher.due(AT) == ["ads", "crm"]
    ads, crm = batcher.take("ads", now=AT), batcher.take("crm", now=AT)
    assert ads is not None and crm is not None
    assert [a.activity_status for a in ads.activities] == ["CLICKED"]
    assert [a.activity_status for a in crm.activities] == ["READ", "CLICKED", "UNDELIVERED"]
