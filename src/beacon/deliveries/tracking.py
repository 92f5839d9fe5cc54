"""Click and open tracking in rendered HTML: links through signed redirects, and the pixel."""

from __future__ import annotations

import html
import re
from collections.abc import Collection
from html.parser import HTMLParser

from beacon.deliveries.links import LinkSigner

_HREF = re.compile(r"""(?<=\s)href\s*=\s*("[^"]*"|'[^']*'|[^\s"'=<>`]+)""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_TRACKED_TAGS = frozenset({"a", "area"})


def track_clicks(
    page: str, *, signer: LinkSigner, delivery_id: str, keep: Collection[str] = ()
) -> str:
    """Return `page` with each http(s) `href` of a link going through a signed click redirect.

    Links in `keep` (the message's unsubscribe and view-online links) are left as they are, as
    are mailto:, tel:, anchors and relative links; nothing else of the page changes.
    """
    kept = {url.strip() for url in keep}
    edits: list[tuple[int, int, str]] = []
    for start, tag in _link_tags(page):
        match = _HREF.search(tag)
        if match is None:
            continue
        quoted = match.group(1)
        target = html.unescape(quoted.strip("\"'")).strip()
        if not target.lower().startswith(("http://", "https://")) or target in kept:
            continue
        try:
            tracked = signer.click_url(delivery_id=delivery_id, target=target)
        except ValueError:
            continue  # not a URL a redirect may carry (too long, whitespace): left untracked
        begin, end = start + match.start(1), start + match.end(1)
        edits.append((begin, end, '"' + html.escape(tracked, quote=True) + '"'))
    for begin, end, replacement in reversed(edits):
        page = page[:begin] + replacement + page[end:]
    return page


def add_open_pixel(page: str, *, pixel_url: str) -> str:
    """Return `page` with a 1-pixel image loading `pixel_url` before `</body>` (else at the end)."""
    pixel = (
        f'<img src="{html.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
    )
    ends = list(_BODY_END.finditer(page))
    if not ends:
        return page + pixel
    at = ends[-1].start()
    return page[:at] + pixel + page[at:]


def _link_tags(page: str) -> list[tuple[int, str]]:
    """Return (offset, raw text) of every `<a>` and `<area>` start tag in `page`."""
    finder = _LinkFinder(page)
    finder.feed(page)
    finder.close()
    return finder.found


class _LinkFinder(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=False)
        self.found: list[tuple[int, str]] = []
        self._page = page
        # HTMLParser counts lines by "\n" alone (not by every line break splitlines knows).
        self._line_starts = [0, *(m.end() for m in re.finditer("\n", page))]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._found_tag(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._found_tag(tag)

    def _found_tag(self, tag: str) -> None:
        raw = self.get_starttag_text()
        if tag in _TRACKED_TAGS and raw is not None:
            line, column = self.getpos()
            offset = self._line_starts[line - 1] + column
            if self._page.startswith(raw, offset):
                self.found.append((offset, raw))
