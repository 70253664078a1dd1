"""Email lint: what makes an edition clip, break or fail compliance in real inboxes."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser

from pipeline.models import Problem, Severity
from pipeline.render.personalize import PLACEHOLDER

ABSOLUTE = ("http://", "https://", "mailto:", "tel:", "#")


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images_without_alt: list[str] = []
        self.relative_links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img" and not (a.get("alt") or "").strip():
            self.images_without_alt.append(a.get("src") or "?")
        for attr in ("href", "src"):
            url = (a.get(attr) or "").strip()
            if attr in a and not url.startswith(ABSOLUTE) and not PLACEHOLDER.fullmatch(url):
                self.relative_links.append(url or "(empty)")


def lint(html: str, *, where: str, clip_bytes: int = 102_000) -> Iterator[Problem]:
    """Warnings for a compiled edition: size vs Gmail's clip, images without alt text,
    relative links, and a missing unsubscribe placeholder."""
    size = len(html.encode("utf-8"))
    if size > clip_bytes:
        yield _warn(where, f"email HTML is {size / 1000:.0f} KB; Gmail clips messages over "
                           f"{clip_bytes / 1000:.0f} KB (shorten the post or split it)")
    scan = _Scan()
    scan.feed(html)
    for src in scan.images_without_alt:
        yield _warn(where, f"image without alt text: {src} (add image_alt or ![alt](...))")
    for url in scan.relative_links:
        yield _warn(where, f"relative link {url!r} will not work in an email; make it absolute")
    if "{{ recipient.unsubscribe_url }}" not in html:
        yield _warn(where, "no unsubscribe link: the template must contain "
                           "{{ recipient.unsubscribe_url }}")


def _warn(where: str, message: str) -> Problem:
    return Problem(where=where, message=message, severity=Severity.WARNING)
