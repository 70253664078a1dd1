"""DEV (dev.to, or any Forem): cross-posts each article with the Forem API v1
(`POST /api/articles`, an `api-key` header), as a draft unless `published: true`.

The article carries the post's Markdown, its `canonical_url` (search engines credit the original)
and, at the end, the canonical-link footer as Markdown. Relative links and images in the Markdown
are made absolute against the canonical URL, as they are in the email. Tags: the configured ones,
else the post's, normalized the way Forem accepts them (lowercase letters and digits, at most 4).

Error rules: a 429 waits for Retry-After (or leaves the delivery pending when that is beyond
`max_wait`); 5xx and a connection that could not be opened are retried; 401/403 fail with what to
fix; other 4xx (422: a duplicate canonical URL, a bad tag...) fail with Forem's message. Creating an
article is not idempotent: once the request went out without an answer, the delivery is marked
unknown, never resent blindly.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr

from pipeline.channels.http import HttpSettings, http_error, post_json
from pipeline.config import Config
from pipeline.errors import ChannelError
from pipeline.fields import http_url
from pipeline.models import Delivery, Receipt, Rendered
from pipeline.render.links import absolute

log = logging.getLogger(__name__)

SERVICE = "devto"
CREDENTIAL = "the API key (api_key; create one under Settings > Extensions)"
ACCEPT = "application/vnd.forem.api-v1+json"   # Forem's API v1 is chosen by this Accept header
MAX_TAGS = 4                   # Forem rejects an article with more
MAX_TAG_LENGTH = 30            # Forem's limit on a tag's name
# An inline link or image target in Markdown: `](target` or `](<target>`.
_INLINE_TARGET = re.compile(r"(\]\(\s*<?)([^)\s>]+)")
# A reference definition: `[label]: target`.
_REFERENCE = re.compile(r"^( {0,3}\[[^\]]+\]:\s*<?)(\S+?)(>?(?:\s|$))", re.MULTILINE)
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>])")


class DevtoSettings(HttpSettings):
    """`channels.<name>:` keys of a `type: devto` channel."""

    base_url: Annotated[str, http_url("https://dev.to")] = "https://dev.to"
    api_key: SecretStr
    published: bool = False                    # False: a draft, to be published by hand
    tags: list[str] | None = None              # default: the post's tags
    organization_id: int | None = Field(default=None, gt=0)


class Devto:
    """Cross-posts articles to DEV / Forem with the canonical URL and footer (one httpx client)."""

    type: ClassVar[str] = "devto"
    kinds: ClassVar[frozenset[str]] = frozenset({"article"})
    crash_rule: ClassVar[str] = "unknown"
    idempotent: ClassVar[bool] = False
    network: ClassVar[str | None] = None
    Settings = DevtoSettings

    def __init__(self, *, name: str, settings: DevtoSettings, config: Config) -> None:
        self.name = name
        self.settings = settings
        self.concurrency = 1
        self.url = f"{settings.base_url}/api/articles"
        self.client = httpx.Client(
            timeout=settings.timeout, follow_redirects=False,
            headers={"api-key": settings.api_key.get_secret_value(), "Accept": ACCEPT})

    def send(self, delivery: Delivery) -> Receipt:
        """Create the article; returns its id and URL. Raises ChannelError."""
        assert delivery.rendered is not None, "a devto delivery carries its rendered post"
        response = post_json(self.client, self.url, {"article": self.article(delivery.rendered)},
                             service=SERVICE, shown=self.settings.base_url, idempotent=self.idempotent,
                             check="base_url")
        if not response.is_success:
            raise http_error(response.status_code, response.headers, _detail(response),
                             service=SERVICE, credential=CREDENTIAL)
        return _receipt(delivery, response)

    def article(self, rendered: Rendered) -> dict[str, Any]:
        """The `article` object of the request."""
        return article(rendered, published=self.settings.published, tags=self.settings.tags,
                       organization_id=self.settings.organization_id)

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()


def article(rendered: Rendered, *, published: bool = False, tags: list[str] | None = None,
            organization_id: int | None = None) -> dict[str, Any]:
    """The article as Forem receives it (also shown by the preview page). `tags`: the
    channel's, else the post's."""
    post = rendered.post
    fields: dict[str, Any] = {
        "title": post.title,
        "body_markdown": body_markdown(rendered),
        "published": published,
        "canonical_url": post.canonical_url,
        "tags": forem_tags(tags if tags is not None else post.tags),
    }
    if post.summary:
        fields["description"] = post.summary
    if post.image:
        fields["main_image"] = post.image
    if organization_id is not None:
        fields["organization_id"] = organization_id
    return fields


def body_markdown(rendered: Rendered) -> str:
    """The post's Markdown (links made absolute), a rule, and the footer in italics."""
    post = rendered.post
    body = absolute_links(post.body_markdown.strip(), post.canonical_url)
    return f"{body}\n\n---\n\n*{footer_markdown(rendered)}*"


def footer_markdown(rendered: Rendered) -> str:
    """The footer sentence in Markdown: the canonical URL shown as its host, linked
    ("Originally published at [host](url) on September 1, 2020.")."""
    post = rendered.post
    host = urlsplit(post.canonical_url).netloc
    # Percent-encoded so that a parenthesis or space cannot end the link early.
    target = post.canonical_url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
    link = f"[{_escape(host)}]({target})"
    return link.join(_escape(part) for part in rendered.footer.text.split(post.canonical_url))


def absolute_links(markdown: str, base: str) -> str:
    """`markdown` with relative link and image targets resolved against `base` (a relative
    link would point into dev.to). Code blocks are left alone."""
    out, fenced = [], False
    for line in markdown.splitlines(keepends=True):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and not line.startswith(("    ", "\t")):
            line = _INLINE_TARGET.sub(lambda m: m[1] + _resolve(m[2], base), line)
            line = _REFERENCE.sub(lambda m: m[1] + _resolve(m[2], base) + m[3], line)
        out.append(line)
    return "".join(out)


def _resolve(target: str, base: str) -> str:
    """An absolute URL for a relative target; anchors, absolute URLs and schemes kept."""
    if target.startswith("#") or urlsplit(target).scheme:
        return target
    return absolute(target, base)


def forem_tags(tags: Iterable[str]) -> list[str]:
    """Tags as Forem accepts them: lowercase ASCII letters and digits only (accents folded,
    spaces and punctuation dropped), no duplicates, at most 4; the rest is dropped."""
    out: list[str] = []
    for tag in tags:
        folded = unicodedata.normalize("NFKD", tag).encode("ascii", "ignore").decode().lower()
        name = "".join(c for c in folded if c.isalnum())
        if name and len(name) <= MAX_TAG_LENGTH and name not in out:
            out.append(name)
    if len(out) > MAX_TAGS:
        log.info("%s: Forem takes at most %d tags; dropping %s", SERVICE, MAX_TAGS,
                 ", ".join(out[MAX_TAGS:]))
    return out[:MAX_TAGS]


def _escape(text: str) -> str:
    """`text` with Markdown's inline syntax characters escaped (it sits inside `*...*`)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _detail(response: httpx.Response) -> str:
    """Forem's error message (`{"error": "...", "status": 422}`), else the body's text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    return response.text or response.reason_phrase


def _receipt(delivery: Delivery, response: httpx.Response) -> Receipt:
    """The Receipt for the created article: its id and URL."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("id") is None:
        # A 2xx without an id: the article most likely exists, but nothing says where.
        raise ChannelError(f"{SERVICE}: the reply carries no article id; it may have been posted: "
                           "check your dashboard, then `pipeline retry --unknown`",
                           retryable=False, unknown=True)
    state = "published" if body.get("published") else "draft"
    return Receipt(key=delivery.key, remote_id=str(body["id"]), url=body.get("url"),
                   detail=f"{response.status_code} {state}")
