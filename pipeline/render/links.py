"""Canonical URLs, UTM tagging per channel, links within an email, and the canonical-link footer."""

from __future__ import annotations

import html
import ipaddress
import re
from collections.abc import Callable
from datetime import datetime
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

from markupsafe import Markup, escape

from pipeline.config import Config, Site
from pipeline.models import Footer, Post

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign")
EMAIL_CHANNEL = "newsletter"   # utm_source of an edition rendered without a named channel
SOCIAL_MEDIUM = "social"


def canonical_url(site: Site, slug: str, date: datetime) -> str:
    """The default canonical URL: the site URL plus the permalink pattern filled for this post."""
    path = site.permalink.format(slug=slug, year=f"{date.year:04d}", month=f"{date.month:02d}",
                                 day=f"{date.day:02d}")
    return urljoin(site.url + "/", path.lstrip("/"))


def absolute(url: str, base: str) -> str:
    """`url` resolved against `base` (relative and root-relative links in posts)."""
    return urljoin(base, url.strip())


def body_url(url: str, base: str) -> str:
    """A link or image of a post's body resolved against `base` (its canonical URL), except a
    bare "#fragment": a link within the post (a footnote, a section), whose target the email
    may hold (`email_links` decides)."""
    return url.strip() if url.strip().startswith("#") else absolute(url, base)


# An <a> start tag as nh3 (html5ever) writes it: every value double-quoted, none holding a quote.
_LINK = re.compile(r'(<a(?:\s+[^\s"\'>/=]+(?:="[^"]*")?)*?\s+href=")([^"]*)(")')
_ID = re.compile(r'\sid="([^"]*)"')


def email_links(body: str, *, page: str, tag: Callable[[str], str]) -> str:
    """The links of a sanitized body as an email carries them: a link within the post (`#fn1`,
    or the post's own URL with a fragment) whose target is in the body stays `#fn1`, untagged,
    so it works inside the email; one whose target is not goes to the page, like every other
    link through `tag` (UTM). Only links: an image's src is a file, not a visit, and is left
    alone (UTM there would only defeat caches and count image loads as clicks)."""
    ids = {html.unescape(v) for v in _ID.findall(body)}
    own = _page_key(page)

    def rewrite(m: re.Match[str]) -> str:
        href = html.unescape(m.group(2))
        parts = urlsplit(href)
        if parts.fragment and (href.startswith("#") or _page_key(href) == own):
            if parts.fragment in ids:
                return m.group(1) + html.escape("#" + parts.fragment) + m.group(3)
            href = urlunsplit(urlsplit(page)._replace(fragment=parts.fragment))
        return m.group(1) + html.escape(tag(href)) + m.group(3)

    return _LINK.sub(rewrite, body)


def _page_key(url: str) -> tuple[str, str, str, str]:
    """A URL without its fragment, compared as a page: scheme and host in lower case, the path
    without its trailing slash."""
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query


def utm_params(config: Config, channel: str, slug: str, medium: str) -> dict[str, str]:
    """The UTM parameters for links sent through `channel`; empty when UTM is disabled."""
    if not config.utm.enabled:
        return {}
    return {
        "utm_source": config.utm.source_by_channel.get(channel, channel),
        "utm_medium": config.utm.medium_by_channel.get(channel, medium),
        "utm_campaign": config.utm.campaign.format(slug=slug),
    }


def tag_url(url: str, params: dict[str, str], config: Config) -> str:
    """`url` with UTM parameters added. Existing query parameters (and fragment) survive;
    UTM values already present are kept, since the author chose them. Links outside the site
    are left alone unless `utm.scope` is `all`."""
    if not params:
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return url
    if config.utm.scope == "site" and not _same_site(parts.netloc, config.site.host):
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {k for k, _ in query}
    query += [(k, v) for k, v in params.items() if k not in present]
    return urlunsplit(parts._replace(path=parts.path or "/", query=urlencode(query, doseq=True)))


def _same_site(netloc: str, host: str) -> bool:
    def bare(h: str) -> str:
        return h.lower().split(":")[0].removeprefix("www.")
    return bare(netloc) == bare(host)


def archive_url(config: Config, key: str) -> str | None:
    """The public page of the edition `key` on `pipeline serve` (`<unsubscribe.base_url>/archive/
    <key>`), or None while `unsubscribe.base_url` is a loopback or private address: a reader could
    not open it (the demo; `check` reports it once a real email channel is configured)."""
    if private_host(config.unsubscribe.base_url):
        return None
    return f"{config.unsubscribe.base_url}/archive/{quote(key, safe='')}"


def private_host(url: str) -> str | None:
    """What makes the host of `url` unreachable from the internet ("localhost", "a loopback
    address", "a private address"), or None when it may be reachable."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "localhost"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_private or ip.is_link_local or ip.is_unspecified:
        return "a private address"
    return None


def footer(post: Post, config: Config, href: str | None = None) -> Footer:
    """The footer sentence in HTML (linking `href`, the canonical URL by default) and in text
    (showing the canonical URL in full)."""
    # Here, not at the top: loading posts (links are made absolute) needs no date formats.
    from babel.dates import format_date

    date = format_date(post.date.date(), format=config.footer.date_format,
                       locale=config.site.locale)
    host = urlsplit(post.canonical_url).netloc
    link = Markup('<a href="{}">{}</a>').format(href or post.canonical_url, host)
    html = escape(config.footer.text).replace("{site}", link).replace("{date}", escape(date))
    text = config.footer.text.replace("{site}", post.canonical_url).replace("{date}", date)
    return Footer(html=str(html), text=text)
