"""Numbers that name people: kept as their exact decimal text, or refused naming the field.

Integers past 64 bits decode as floats, and `1180591620717411303424` and
`1180591620717411303425` would both become `1.1805916207174113e+21`: two people on one
profile. Every way in (Segment, Amplitude, `/track`, the server API, the import) refuses them.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from beacon.identity.numbers import INEXACT_ID
from beacon.imports.formats import amplitude_row, beacon_row, segment_row
from beacon.imports.rows import BadRow
from tests.integration.conftest import ADMIN, Beacon, profile_by

BIG = 1180591620717411303424  # 2**70: beyond 64 bits
BIGGER = BIG + 1
U64_MAX = 2**64 - 1


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def test_segment_ids_past_64_bits_are_refused_and_never_merge_two_people(
    beacon: Beacon, client: httpx.AsyncClient, write_key: str
) -> None:
    for user_id in (BIG, BIGGER):
        call = {"userId": user_id, "event": "Signed Up"}
        response = await client.post("/v1/track", json=call, headers=basic(write_key))

        assert response.status_code == 400, response.text
        assert response.json()["success"] is False
        assert "userId" in response.json()["message"]
        assert "whole number within 64 bits" in response.json()["message"]
    assert await beacon.events() == []
    assert await beacon.profile_count() == 0


@pytest.mark.parametrize("field", ["anonymousId", "messageId"])
async def test_segment_other_numeric_ids_past_64_bits_are_refused(
    client: httpx.AsyncClient, write_key: str, field: str
) -> None:
    call = {"userId": "u-1", "anonymousId": "a-1", field: BIG, "event": "Signed Up"}
    batch = {"batch": [{**call, "type": "track"}]}

    response = await client.post("/v1/batch", json=batch, headers=basic(write_key))

    assert response.status_code == 400, response.text
    assert f"batch[0].{field}" in response.json()["message"] or field in response.json()["message"]


async def test_segment_ids_up_to_64_bits_are_kept_exactly_and_stay_apart(
    client: httpx.AsyncClient, write_key: str
) -> None:
    for user_id in (U64_MAX, U64_MAX - 1):
        call = {"userId": user_id, "event": "Signed Up"}
        response = await client.post("/v1/track", json=call, headers=basic(write_key))
        assert response.status_code == 200, response.text

    first = await profile_by(client, "user_id", str(U64_MAX))
    second = await profile_by(client, "user_id", str(U64_MAX - 1))
    assert first["id"] != second["id"]


@pytest.mark.parametrize("field", ["user_id", "device_id"])
async def test_amplitude_ids_past_64_bits_are_refused_by_event_and_field(
    beacon: Beacon, client: httpx.AsyncClient, write_key: str, field: str
) -> None:
    events = [{"event_type": "fine", "user_id": "user-1"}, {"event_type": "big", field: BIG}]

    response = await client.post("/2/httpapi", json={"api_key": write_key, "events": events})

    assert response.status_code == 400, response.text
    assert response.json()["events_with_invalid_fields"] == {field: [1]}
    assert await beacon.events() == []


async def test_track_identify_with_a_user_id_past_64_bits_is_refused_naming_it(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    body = {
        "source": {"id": beacon.source_id},
        "session": {"id": "s-1"},
        "events": [{"type": "identify", "properties": {"user_id": BIG}}],
    }

    response = await client.post("/track", json=body)

    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["problems"]
    assert problem["loc"] == ["events", 0, "properties", "user_id"]
    assert problem["msg"] == INEXACT_ID


async def test_track_identify_with_an_integer_user_id_names_the_person_by_its_text(
    beacon: Beacon, client: httpx.AsyncClient
) -> None:
    await beacon.track([{"type": "identify", "properties": {"user_id": U64_MAX}}])

    assert (await profile_by(client, "user_id", str(U64_MAX)))["id"]


@pytest.mark.parametrize("field", ["user_id", "anonymous_id"])
async def test_server_api_ids_past_64_bits_are_refused_naming_the_field(
    client: httpx.AsyncClient, write_key: str, field: str
) -> None:
    body = {"events": [{"type": "t", field: BIG}]}

    response = await client.post(
        "/api/v1/events", json=body, headers={"Authorization": f"Bearer {write_key}"}
    )

    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["problems"]
    assert problem["loc"] == ["events", 0, field]
    assert INEXACT_ID in problem["msg"]


async def test_server_api_takes_an_integer_anonymous_id_as_its_text(
    client: httpx.AsyncClient, write_key: str
) -> None:
    body = {"events": [{"type": "t", "anonymous_id": 12345}]}

    response = await client.post(
        "/api/v1/events", json=body, headers={"Authorization": f"Bearer {write_key}"}
    )

    assert response.status_code == 200, response.text
    assert (await profile_by(client, "anonymous_id", "12345"))["id"]


@pytest.mark.parametrize(
    ("mapper", "row"),
    [
        (segment_row, {"type": "track", "event": "t", "userId": BIG, "timestamp": "2026-01-01"}),
        (amplitude_row, {"event_type": "t", "user_id": BIG, "time": 1767225600000}),
        (amplitude_row, {"event_type": "t", "user_id": "u-1", "$insert_id": BIG, "time": 1}),
    ],
    ids=["segment", "amplitude", "amplitude-insert-id"],
)
def test_imported_ids_past_64_bits_are_refused(mapper: Any, row: dict[str, Any]) -> None:
    line = json.dumps(row).encode()

    with pytest.raises(BadRow) as refused:
        mapper(line, lambda: "derived")

    assert "64 bits" in str(refused.value.message) or "string" in str(refused.value.message)


def test_beacon_import_rows_keep_ids_past_64_bits_as_their_exact_text() -> None:
    """Beacon's own format is read by a parser that keeps big integers exact."""
    first, second = (
        beacon_row(
            json.dumps({"type": "t", "user_id": n, "time": "2026-01-01T00:00:00Z"}).encode(),
            lambda: "derived",
        )
        for n in (BIG, BIGGER)
    )

    assert (first.user_id, second.user_id) == (str(BIG), str(BIGGER))


async def test_erasure_finds_refused_payloads_naming_the_person_by_a_numeric_id(
    beacon: Beacon, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    await beacon.track([{"type": "identify", "properties": {"user_id": 4242}}])
    person = await profile_by(client, "user_id", "4242")
    refused = [
        {"events": [{"type": "x", "properties": {"user_id": 4242}, "time": "never"}]},
        {"events": [{"type": "x", "properties": {"user_id": 42420}, "time": "never"}]},
        {"events": [{"type": "x", "properties": {"note": "order 4242 shipped"}, "time": "never"}]},
    ]
    for body in refused:
        response = await client.post(
            "/track", json={"source": {"id": beacon.source_id}, "session": {"id": "s"}, **body}
        )
        assert response.status_code == 422, response.text

    export = await client.get(f"/api/profiles/{person['id']}/export", headers=ADMIN)
    erased = await client.delete(f"/api/profiles/{person['id']}", headers=ADMIN)

    [letter] = export.json()["dead_letters"]
    assert '"user_id":4242}' in letter["payload"].replace(" ", "")
    assert erased.json()["counts"]["dead_letters"] == 1
    kept = [d["payload"] for d in await beacon.dead_letters()]
    assert len(kept) == 2  # another person's id that begins the same, and digits inside text
