"""Click tracking rewrites links to signed redirects, leaving everything else of the page alone."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from beacon.deliveries.links import LinkSigner
from beacon.deliveries.tracking import add_open_pixel, track_clicks

SIGNER = LinkSigner(secrets=["s" * 32], base_url="https://links.shop.test")
NOW = datetime(2025, 3, 1, tzinfo=UTC)
UNSUBSCRIBE = "https://links.shop.test/m/unsubscribe/abc"
VIEW = "https://links.shop.test/m/view/abc"


def targets(page: str) -> list[str]:
    """Where each tracked link of `page` leads, read back through the signer."""
    found = []
    for token in re.findall(r'href="https://links\.shop\.test/m/click/([^"]+)"', page, re.I):
        link = SIGNER.verify(token, purpose="click", now=NOW)
        assert link.delivery_id == "d-1"
        found.append(str(link.target))
    return found


def test_http_links_go_through_signed_redirects_to_where_they_pointed() -> None:
    page = (
        '<p>Hi &amp; welcome</p>\n<a class="cta" href="https://shop.test/sale?a=1&amp;b=2">Sale</a>'
        "<A HREF=https://shop.test/new>New</A>\n<area shape=rect href='http://shop.test/map'>"
    )

    tracked = track_clicks(page, signer=SIGNER, delivery_id="d-1")

    assert targets(tracked) == [
        "https://shop.test/sale?a=1&b=2",
        "https://shop.test/new",
        "http://shop.test/map",
    ]
    assert tracked.startswith('<p>Hi &amp; welcome</p>\n<a class="cta" href="https://links.')
    assert tracked.count(">Sale</a>") == 1


def test_unsubscribe_view_online_and_non_http_links_are_left_alone() -> None:
    page = (
        f'<a href="{UNSUBSCRIBE}">Unsubscribe</a> <a href="{VIEW}">View online</a>'
        '<a href="mailto:help@shop.test">Mail</a> <a href="tel:+380501234567">Call</a>'
        '<a href="#top">Top</a> <a href="/relative">Rel</a> <a name="x">No href</a>'
        '<a data-href="https://shop.test/data" href="#">Data</a>'
        '<!-- <a href="https://shop.test/comment"> -->'
        "<script>var s = '<a href=\"https://shop.test/script\">';</script>"
        '<img src="https://shop.test/logo.png">'
    )

    tracked = track_clicks(page, signer=SIGNER, delivery_id="d-1", keep=[UNSUBSCRIBE, VIEW])

    assert tracked == page


def test_a_page_with_line_breaks_of_every_kind_is_rewritten_in_place() -> None:
    page = (
        'a\r\nb\x0cc\u2028<a href="https://shop.test/1">1</a>\n<a href="https://shop.test/2">2</a>'
    )

    tracked = track_clicks(page, signer=SIGNER, delivery_id="d-1")

    assert targets(tracked) == ["https://shop.test/1", "https://shop.test/2"]
    assert tracked.startswith("a\r\nb\x0cc\u2028<a href=")


def test_the_open_pixel_goes_before_the_end_of_the_body() -> None:
    pixel = "https://links.shop.test/m/open/t?x=1&y=2"

    with_body = add_open_pixel("<html><body><p>Hi</p></BODY></html>", pixel_url=pixel)
    without = add_open_pixel("<p>Hi</p>", pixel_url=pixel)

    assert with_body.startswith(
        '<html><body><p>Hi</p><img src="https://links.shop.test/m/open/t?x=1&amp;y=2"'
    )
    assert with_body.endswith('height:1px"></BODY></html>')
    assert without.startswith("<p>Hi</p><img ")
