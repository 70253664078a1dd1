"""`GET /archive/<key>` of `pipeline serve`: an edition as a web page, the "View in browser" link
of every email, with no one's data in it.

The page is the email's own HTML with its placeholders filled for nobody: the name fallback, no
address, and the sign-up page where the unsubscribe and manage links would be (the page is
public, and a copy of it may be forwarded anywhere). A post or a ready feed entry is found by its
slug (`load_all`); a digest by its key, rebuilt from the posts it holds (`digest_items`) and the
time its timetable run fired, as it was sent. Drafts and articles not yet sendable are not shown.

Rendered pages are kept (the last MAX_PAGES) and rendered again once the posts, the templates or
the stored feed entries change (a fingerprint of names, sizes and modification times).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, select
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.intake.feed_settings import PostsSource
from pipeline.intake.sources import load_all
from pipeline.models import Post
from pipeline.render.email import render_edition
from pipeline.render.personalize import Fill
from pipeline.store.feed_entries import stored_version
from pipeline.store.schema import digest_items, schedule_runs
from pipeline.timetable.entries import Entry
from pipeline.timetable.schedule import digest_edition
from pipeline.web.context import WebContext

log = logging.getLogger(__name__)

MAX_PAGES = 64               # rendered pages kept in memory
MAX_AGE = 300                # seconds a browser or proxy may keep a page
# An edition key as a path segment: a post's slug or a digest's key. Lookups only ever compare it
# with known keys, but nothing like a path (a separator, a leading dot) or a control character
# gets that far.
_KEY = re.compile(r"(?!\.)[^/\\\x00-\x1f\x7f]{1,300}")
_DIGEST_KEY = re.compile(r"digest-(?P<entry>.+)-(?P<day>\d{4}-\d{2}-\d{2})")


def public_values(config: Config) -> dict[str, str]:
    """The placeholder values of a page anyone may see: no name, no address, and the sign-up
    page for the unsubscribe and manage links (there is no one to unsubscribe)."""
    signup = f"{config.unsubscribe.base_url}/subscribe"
    return {"name": config.email.name_fallback, "email": "", "unsubscribe_url": signup,
            "manage_url": signup}


@dataclass(frozen=True, kw_only=True)
class _Index:
    """The articles as of one version of the sources: every post and stored feed entry by slug
    (drafts and future ones too; whether each may be shown is decided per request)."""

    version: str
    posts: tuple[Post, ...]
    by_slug: dict[str, Post]


@dataclass(frozen=True, kw_only=True)
class _Digest:
    """A digest as it was sent: its timetable entry, channel, fire time and posts."""

    entry: Entry
    channel: str
    fire: datetime
    posts: tuple[Post, ...]

    def html(self, config: Config) -> str:
        return digest_edition(config, self.entry, self.channel, self.fire, list(self.posts)).html


class Archive:
    """The editions of one config, rendered on first request and kept until a source changes."""

    def __init__(self, config: Config, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self._lock = threading.Lock()
        self._index: _Index | None = None
        self._pages: OrderedDict[tuple[str, ...], str] = OrderedDict()

    def page(self, key: str, *, now: datetime | None = None) -> str | None:
        """The HTML of the edition `key` as the archive shows it, or None: no such edition (or
        not one to show yet). Raises PipelineError when it exists but does not render."""
        if not _KEY.fullmatch(key):
            return None
        now = now or datetime.now(UTC)
        index = self._current()
        post = index.by_slug.get(key)
        if post is not None:
            if post.draft or post.sendable_from > now:
                return None
            return self._cached((index.version, key), lambda: render_edition(post, self.config).html)
        digest = self._digest(key, index, now)
        if digest is None:
            return None
        cache_key = (index.version, key, digest.channel, digest.fire.isoformat(),
                     *(p.slug for p in digest.posts))
        return self._cached(cache_key, lambda: digest.html(self.config))

    def _current(self) -> _Index:
        """The index for the sources as they are now, loaded again only when they changed."""
        version = self._version()
        with self._lock:
            if self._index is None or self._index.version != version:
                loaded = load_all(self.config, now=datetime.max.replace(tzinfo=UTC))
                self._index = _Index(version=version, posts=loaded.posts,
                                     by_slug={p.slug: p for p in loaded.posts})
                self._pages.clear()
            return self._index

    def _version(self) -> str:
        """A fingerprint of the templates and posts folders (names, sizes, modification times)
        and of the stored feed entries."""
        config = self.config
        roots = [config.path(config.templates)]
        if any(isinstance(s, PostsSource) for s in config.sources):
            roots.append(config.path(config.posts))
        digest = hashlib.sha256(stored_version(config).encode())
        for root in roots:
            for path in sorted(root.rglob("*")) if root.is_dir() else ():
                try:
                    stat = path.stat()
                except OSError:          # removed while listed: the next request sees it gone
                    continue
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def _cached(self, key: tuple[str, ...], render: Callable[[], str]) -> str:
        with self._lock:
            if key in self._pages:
                self._pages.move_to_end(key)
                return self._pages[key]
        # Rendered outside the lock: a slow page holds up no other. Two requests for one new page
        # may both render it; the result is the same.
        html = Fill.of(render(), escape=True)(public_values(self.config))
        with self._lock:
            self._pages[key] = html
            while len(self._pages) > MAX_PAGES:
                self._pages.popitem(last=False)
        return html

    def _digest(self, key: str, index: _Index, now: datetime) -> _Digest | None:
        """The digest `key` as it was sent, or None: not a digest key, an entry no longer in the
        timetable, no run that sent it, or none of its posts to show."""
        match = _DIGEST_KEY.fullmatch(key)
        if match is None:
            return None
        entry = next((e for e in self.config.schedule
                      if e.edition == "digest" and e.name == match["entry"]), None)
        try:
            day = date.fromisoformat(match["day"])
        except ValueError:          # shaped like a date, but not one (2024-02-30)
            return None
        if entry is None:
            return None
        midnight = datetime.combine(day, datetime.min.time(), UTC)
        with self.engine.connect() as conn:
            rows = conn.execute(select(digest_items.c.channel, digest_items.c.slug)
                                .where(digest_items.c.digest == key)).all()
            # The run that sent it: the first that fired on that day on the entry's clock (a day
            # either side in UTC covers every time zone).
            fires = conn.execute(select(schedule_runs.c.fire_time).where(
                schedule_runs.c.entry == entry.name, schedule_runs.c.status == "ran",
                schedule_runs.c.fire_time >= midnight - timedelta(days=1),
                schedule_runs.c.fire_time < midnight + timedelta(days=2),
            ).order_by(schedule_runs.c.fire_time)).scalars().all()
        zone = entry.zone(self.config.timezone)
        fire = next((f for f in fires if f.astimezone(zone).date() == day), None)
        if not rows or fire is None:
            return None
        # Each channel of the entry holds the same posts unless one joined later: the first one's.
        channel = min(r.channel for r in rows)
        members = {r.slug for r in rows if r.channel == channel}
        posts = tuple(p for p in index.posts
                      if p.slug in members and not p.draft and p.sendable_from <= now)
        return _Digest(entry=entry, channel=channel, fire=fire, posts=posts) if posts else None


def routes(ctx: WebContext) -> list[Route]:
    """GET /archive/KEY: a post's or a digest's edition, as anyone may see it."""
    archive = Archive(ctx.config, ctx.engine)

    def not_found() -> HTMLResponse:
        return ctx.page("archive.html.j2", "Not found", 404,
                        message="There is no edition at this address. The articles are on the site.")

    # A plain function: Starlette runs it in its thread pool, so rendering never blocks the loop.
    def show(request: Request) -> HTMLResponse:
        key = request.path_params["key"]
        try:
            html = archive.page(key)
        except PipelineError as exc:
            log.warning("archive: %s does not render: %s", key, exc)
            return ctx.page("archive.html.j2", "Not available", 500,
                            message="This edition cannot be shown right now. The articles are on the site.")
        if html is None:
            return not_found()
        return HTMLResponse(html, headers={"Cache-Control": f"public, max-age={MAX_AGE}",
                                           "X-Robots-Tag": "noindex"})

    return [Route("/archive/{key:path}", show, methods=["GET"])]
