"""Email lint: what makes an edition clip, break or fail compliance in real inboxes."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urlsplit

from pipeline.models import Problem, Severity
from pipeline.render.personalize import PLACEHOLDER

ABSOLUTE = ("http://", "https://", "mailto:", "tel:", "#")


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images_without_alt: list[str] = []
        self.relative_links: list[str] = []
        self.broken_links: list[tuple[str, str]] = []     # (url, why)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img" and not (a.get("alt") or "").strip():
            self.images_without_alt.append(a.get("src") or "?")
        for attr in ("href", "src"):
            url = (a.get(attr) or "").strip()
            if attr not in a or PLACEHOLDER.fullmatch(url):
                continue
            if not url.startswith(ABSOLUTE):
                self.relative_links.append(url or "(empty)")
            elif why := unreachable(url):
                self.broken_links.append((url, why))


def unreachable(url: str) -> str | None:
    """Why an absolute URL cannot work whatever the network says (None: it may work)."""
    if any(c.isspace() for c in url):
        return "it contains a space (encode it as %20)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"it is malformed ({exc})"
    if parts.scheme in ("http", "https"):
        host = parts.hostname or ""
        if not host:
            return "it has no host name"
        if "." not in host and ":" not in host and host != "localhost":   # ":": an IPv6 literal
            return f"its host {host!r} is not a domain name"
        if host in ("localhost", "127.0.0.1") or host.endswith((".local", ".test", ".invalid")):
            return f"its host {host!r} cannot be reached from a reader's mailbox"
        if port == 0:
            return "its port is 0"
    if parts.scheme == "mailto" and "@" not in parts.path:
        return "a mailto: link needs an address"
    return None


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
    for url, why in scan.broken_links:
        yield _warn(where, f"link {url!r} cannot work: {why}")
    if "{{ recipient.unsubscribe_url }}" not in html:
        yield _warn(where, "no unsubscribe link: the template must contain "
                           "{{ recipient.unsubscribe_url }}")


def _warn(where: str, message: str) -> Problem:
    return Problem(where=where, message=message, severity=Severity.WARNING)
