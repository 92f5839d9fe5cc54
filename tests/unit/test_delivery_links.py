"""Signed links: each verifies for its own purpose only, until it expires, under any live secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from beacon.deliveries.links import LinkSigner, MessageLinks, check_target

OLD = "o" * 32
NEW = "n" * 40
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def signer(*secrets: str) -> LinkSigner:
    return LinkSigner(secrets=list(secrets), base_url="https://links.shop.test/")


def test_a_click_link_carries_its_target_signed() -> None:
    url = signer(NEW).click_url(delivery_id="d-1", target="https://shop.test/sale?a=1&b=2")

    assert url.startswith("https://links.shop.test/m/click/")
    link = signer(NEW).verify(token_of(url), purpose="click", now=NOW)
    assert (link.purpose, link.delivery_id) == ("click", "d-1")
    assert link.target == "https://shop.test/sale?a=1&b=2"
    assert link.expires_at is None


def test_the_message_links_each_verify_for_their_own_purpose() -> None:
    links = signer(NEW).message_links(delivery_id="d-2")

    assert isinstance(links, MessageLinks)
    for url, purpose in [
        (links.open_pixel_url, "open"),
        (links.view_online_url, "view"),
        (links.unsubscribe_url, "unsubscribe"),
        (links.one_click_unsubscribe_url, "one_click_unsubscribe"),
    ]:
        link = signer(NEW).verify(token_of(url), purpose=purpose, now=NOW)  # type: ignore[arg-type]
        assert (link.delivery_id, link.target) == ("d-2", None)

    with pytest.raises(ValueError, match="the link is for 'open', not 'unsubscribe'") as wrong:
        signer(NEW).verify(token_of(links.open_pixel_url), purpose="unsubscribe", now=NOW)
    assert getattr(wrong.value, "reason", None) == "wrong_purpose"


def test_a_changed_target_or_delivery_does_not_verify() -> None:
    token = signer(NEW).token(purpose="click", delivery_id="d-1", target="https://shop.test/")
    forged_payload = signer(OLD).token(
        purpose="click", delivery_id="d-1", target="https://evil.test/"
    )
    forged = forged_payload.split(".")[0] + "." + token.split(".")[1]

    with pytest.raises(ValueError, match="signature does not match") as refused:
        signer(NEW).verify(forged, purpose="click", now=NOW)
    assert getattr(refused.value, "reason", None) == "bad_signature"


def test_a_rotation_signs_with_the_first_secret_and_verifies_with_every_one() -> None:
    before = signer(OLD).url(purpose="view", delivery_id="d-3")
    during = signer(NEW, OLD)
    after = signer(NEW)

    signed_during = during.url(purpose="view", delivery_id="d-3")
    assert during.verify(token_of(before), purpose="view", now=NOW).delivery_id == "d-3"
    assert after.verify(token_of(signed_during), purpose="view", now=NOW).delivery_id == "d-3"
    with pytest.raises(ValueError, match="signature does not match"):
        after.verify(token_of(before), purpose="view", now=NOW)


def test_an_expiring_link_works_until_its_time() -> None:
    url = signer(NEW).click_url(
        delivery_id="d-4", target="https://shop.test/", expires_at=NOW + timedelta(days=30)
    )

    link = signer(NEW).verify(token_of(url), purpose="click", now=NOW + timedelta(days=29))
    assert link.expires_at == NOW + timedelta(days=30)
    with pytest.raises(ValueError, match="the link expired at 2025-03-31") as expired:
        signer(NEW).verify(token_of(url), purpose="click", now=NOW + timedelta(days=30))
    assert getattr(expired.value, "reason", None) == "expired"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "!!!.???", "x" * 5000, "e30.AAAA"])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(ValueError, match=r"malformed|signature does not match"):
        signer(NEW).verify(token, purpose="click", now=NOW)


@pytest.mark.parametrize(
    "target", ["javascript:alert(1)", "/relative", "data:text/html,hi", "https://a b.test/"]
)
def test_a_click_may_only_lead_to_an_absolute_http_url(target: str) -> None:
    with pytest.raises(ValueError, match="link target"):
        check_target(target)
    with pytest.raises(ValueError, match="link target"):
        signer(NEW).click_url(delivery_id="d", target=target)


def test_bad_secrets_and_base_urls_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="link secret 2 of 2 is 5 bytes; it needs at least 32"):
        signer(NEW, "short")
    with pytest.raises(ValueError, match="a list of secrets"):
        LinkSigner(secrets=[], base_url="https://x.test")
    with pytest.raises(ValueError, match="a list of secrets"):
        LinkSigner(secrets=NEW, base_url="https://x.test")
    with pytest.raises(ValueError, match="base URL must be an absolute http"):
        LinkSigner(secrets=[NEW], base_url="links.shop.test")
    with pytest.raises(ValueError, match="only a click link has one"):
        signer(NEW).token(purpose="open", delivery_id="d", target="https://shop.test/")
