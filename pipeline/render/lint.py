"""Email lint: what makes an edition clip, break or fail compliance in real inboxes."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from pipeline.models import Post, Problem, Severity
from pipeline.render.personalize import PLACEHOLDER

ABSOLUTE = ("http://", "https://", "mailto:", "tel:", "#")
# The start tags of an edition, read the way html.parser reads them but with three regular
# expressions: an edition is ~20 KB of MJML output, and a parser in Python took a fifth of its
# rendering. Comments (MJML's Outlook blocks among them) and script/style content are not markup.
_NOT_MARKUP = re.compile(r"<!--.*?-->|<(script|style)\b[^>]*>.*?</\1\s*>", re.S | re.I)
_START_TAG = re.compile(r"<([a-zA-Z][^\s/>]*+)((?:[^>\"']++|\"[^\"]*+\"|'[^']*+')*+)>")
_ATTRIBUTE = re.compile(r"""([^\s"'>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")


class _Scan:
    """What lint reports about the tags of an edition."""

    def __init__(self) -> None:
        self.images_without_alt: list[str] = []
        self.relative_links: list[str] = []
        self.broken_links: list[tuple[str, str]] = []     # (url, why)

    def feed(self, markup: str) -> None:
        for m in _START_TAG.finditer(_NOT_MARKUP.sub("", markup)):
            if "href" in m.group(2).lower() or "src" in m.group(2).lower() or m.group(1).lower() == "img":
                self.start_tag(m.group(1).lower(), _attributes(m.group(2)))

    def start_tag(self, tag: str, a: dict[str, str | None]) -> None:
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


def _attributes(text: str) -> dict[str, str | None]:
    """A start tag's attributes (names in lower case, values unescaped; None: no value)."""
    out: dict[str, str | None] = {}
    for m in _ATTRIBUTE.finditer(text):
        value = next((v for v in m.group(2, 3, 4) if v is not None), None)
        out[m.group(1).lower()] = html.unescape(value) if value is not None else None
    return out


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


def lint(html: str, *, where: str, clip_bytes: int = 102_000, post: Post | None = None) -> Iterator[Problem]:
    """Warnings for a compiled edition: size vs Gmail's clip, images without alt text,
    relative links, and a missing unsubscribe placeholder; with `post`, its `image` without an
    `image_alt` too (reported once, as the front matter's, not again as the email's image)."""
    size = len(html.encode("utf-8"))
    if size > clip_bytes:
        yield _warn(where, f"email HTML is {size / 1000:.0f} KB; Gmail clips messages over "
                           f"{clip_bytes / 1000:.0f} KB (shorten the post or split it)")
    scan = _Scan()
    scan.feed(html)
    reported: set[str | None] = set()
    if post is not None:
        for problem in image_alt(post):
            reported.add(post.image)
            yield problem
    for src in scan.images_without_alt:
        if src not in reported:
            yield _warn(where, f"image without alt text: {src} (add image_alt or ![alt](...))")
    for url in scan.relative_links:
        yield _warn(where, f"relative link {url!r} will not work in an email; make it absolute")
    for url, why in scan.broken_links:
        yield _warn(where, f"link {url!r} cannot work: {why}")
    if "{{ recipient.unsubscribe_url }}" not in html:
        yield _warn(where, "no unsubscribe link: the template must contain "
                           "{{ recipient.unsubscribe_url }}")


def image_alt(post: Post) -> Iterator[Problem]:
    """A post whose `image` has no `image_alt`: the networks that attach the image (Mastodon,
    Bluesky, LinkedIn...) and screen readers would show it without a description."""
    if post.image and not (post.image_alt or "").strip():
        yield _warn(post.path, f"front matter: 'image' ({post.image}) has no 'image_alt'; add "
                               "image_alt: \"what the image shows\" (posted with the image as its "
                               "description, and read out by screen readers)")


def _warn(where: str, message: str) -> Problem:
    return Problem(where=where, message=message, severity=Severity.WARNING)
