"""The Atom feed of the posts in `posts/` (`pipeline build-feed`, and `pipeline preview`), for the
site to serve: the newest `feed.limit` posts that are not drafts or dated in the future, newest
first, each with its canonical link, author, summary, full HTML content and categories.

Built with feedgen. The feed's `updated` is the newest post's date, so the same posts always give
the same file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from feedgen.feed import FeedGenerator
from lxml import etree  # feedgen's own XML library

from pipeline.config import Config
from pipeline.intake.posts import load_posts
from pipeline.models import Post
from pipeline.plan import publishable
from pipeline.render.text import first_sentence

log = logging.getLogger(__name__)

ATOM = "{http://www.w3.org/2005/Atom}"


def feed_url(config: Config) -> str:
    """Where the site serves the feed: `feed.url`, else <site.url>/feed.xml."""
    return config.feed.url or f"{config.site.url}/feed.xml"


def feed_posts(config: Config, *, now: datetime | None = None,
               posts: Sequence[Post] | None = None) -> list[Post]:
    """The posts the feed lists: publishable by `now`, newest first, at most `feed.limit`.
    `posts`: the posts of `posts/` already loaded, instead of reading the folder again."""
    loaded = posts if posts is not None else load_posts(config).posts
    ready = publishable(loaded, now or datetime.now(UTC))
    return sorted(ready, key=lambda p: (p.date, p.slug), reverse=True)[: config.feed.limit]


def entry_id(config: Config, post: Post) -> str:
    """A post's Atom id: a tag URI (RFC 4151) from the site's host and the post's slug, which stays
    the same when the canonical URL or the permalink pattern changes."""
    return f"tag:{config.site.host.split(':')[0]},{post.date:%Y}:{post.slug}"


def build_feed(config: Config, posts: Sequence[Post]) -> bytes:
    """The Atom 1.0 document listing `posts` in the order given."""
    fg = FeedGenerator()
    fg.id(feed_url(config))
    fg.title(config.feed.title or config.site.name)
    fg.author({"name": config.site.name})
    fg.link(href=config.site.url + "/", rel="alternate", type="text/html")
    fg.link(href=feed_url(config), rel="self", type="application/atom+xml")
    fg.language(config.site.locale.replace("_", "-"))
    fg.generator("pipeline")
    fg.updated(max((p.date for p in posts), default=datetime(1970, 1, 1, tzinfo=UTC)))
    language = config.site.locale.split("_")[0]
    for post in posts:
        entry = fg.add_entry(order="append")
        entry.id(entry_id(config, post))
        entry.title(post.title)
        entry.link(href=post.canonical_url, rel="alternate", type="text/html")
        entry.author({"name": post.author or config.site.name})
        entry.published(post.date)
        entry.updated(post.date)
        entry.summary(post.summary or first_sentence(post.body_html, language) or post.title)
        entry.content(post.body_html, type="html")
        for tag in post.tags:
            entry.category(term=tag)
    return _alternate_links(fg.atom_str(pretty=True, encoding="UTF-8"))


def _alternate_links(document: bytes) -> bytes:
    """Each entry's link marked rel="alternate" type="text/html": feedgen 1.0 drops the rel and type
    of entry links (a link without rel means alternate in Atom, but readers do better told)."""
    root = etree.fromstring(document)
    for link in root.iterfind(f"{ATOM}entry/{ATOM}link"):
        link.set("rel", link.get("rel") or "alternate")
        if link.get("rel") == "alternate":
            link.set("type", link.get("type") or "text/html")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def write_feed(config: Config, out: Path | None = None, *, now: datetime | None = None,
               posts: Sequence[Post] | None = None) -> tuple[Path, int]:
    """Write the feed to `out` (default: `feed.out`) atomically; returns the path and the number
    of entries. `posts`: the posts of `posts/` already loaded."""
    target = out or config.path(config.feed.out)
    posts = feed_posts(config, now=now, posts=posts)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".tmp")
    partial.write_bytes(build_feed(config, posts))
    os.replace(partial, target)
    log.info("wrote %s (%d entries)", target, len(posts))
    return target, len(posts)
