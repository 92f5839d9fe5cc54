"""Gzip bodies are bounded by their decompressed size."""

import gzip

import pytest

from beacon.core.errors import ClientError
from beacon.ingest.http import decode_json, gunzip


def test_gunzip_returns_the_body_within_the_limit() -> None:
    assert gunzip(gzip.compress(b'{"a": 1}'), limit=100) == b'{"a": 1}'


def test_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(b"0" * 50_000_000)
    with pytest.raises(ClientError) as caught:
        gunzip(bomb, limit=500 * 1024)
    assert caught.value.status == 413


@pytest.mark.parametrize(
    "data", [b"not gzip at all", gzip.compress(b"x" * 1000, mtime=0)[:20]], ids=["plain", "cut"]
)
def test_broken_gzip_is_a_400(data: bytes) -> None:
    with pytest.raises(ClientError) as caught:
        gunzip(data, limit=10_000)
    assert caught.value.status == 400


@pytest.mark.parametrize("body", [b"", b"   ", b"{", b"[1,", b"\xff\xfe"])
def test_malformed_json_is_a_400_naming_the_problem(body: bytes) -> None:
    with pytest.raises(ClientError) as caught:
        decode_json(body)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_json"
