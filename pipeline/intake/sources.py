"""Every article the timetable and `publish` may send: the Markdown posts (when `sources:` lists
`type: posts`, the default) and the stored entries of the feeds that are ready to send.

Feeds are read from the state database only; `pipeline fetch` (and each scheduler run) fetches.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from pipeline.config import Config
from pipeline.intake.feed_settings import PostsSource
from pipeline.intake.posts import LoadResult, load_posts
from pipeline.models import Post, Problem, Severity

if TYPE_CHECKING:
    from pipeline.intake.feeds import FeedReport

log = logging.getLogger(__name__)


def load_all(config: Config, *, now: datetime | None = None, local: LoadResult | None = None) -> LoadResult:
    """The local posts plus the feed entries ready by `now`, oldest first, like `load_posts`.
    A feed entry whose slug a local post already uses is left out with a warning naming both;
    two articles with one canonical URL are a warning naming both. `local`: the posts already
    loaded (the preview page has them), instead of reading `posts/` again."""
    now = now or datetime.now(UTC)
    if not any(isinstance(s, PostsSource) for s in config.sources):
        local = LoadResult(posts=(), problems=())
    local = local if local is not None else load_posts(config)
    taken = {p.slug: p.path for p in local.posts}
    posts: list[Post] = list(local.posts)
    problems: list[Problem] = list(local.problems)
    for post in _feed_posts(config, now):
        if post.slug in taken:
            problems.append(Problem(where=post.path, severity=Severity.WARNING, message=(
                f"slug {post.slug!r} is also the slug of {taken[post.slug]}; this entry is not sent")))
            continue
        posts.append(post)
    posts.sort(key=lambda p: (p.date, p.slug))
    problems += same_canonical_url(posts)
    return LoadResult(posts=tuple(posts), problems=tuple(problems))


def _feed_posts(config: Config, now: datetime) -> list[Post]:
    """The stored feed entries ready by `now`; without feeds, none, and the state database (and
    its libraries, a fifth of a second to import) stays closed."""
    if not config.feeds:
        return []
    from pipeline.store.feed_entries import ready_posts

    return ready_posts(config, now=now)


def same_canonical_url(posts: list[Post]) -> list[Problem]:
    """A warning for each article whose canonical URL an older one already has (drafts aside,
    since they are never sent): both are sent, so readers get one article twice and the search
    engines see two copies claiming one original."""
    first: dict[str, Post] = {}
    problems = []
    for post in (p for p in posts if not p.draft):
        key = _url_key(post.canonical_url)
        if key in first:
            problems.append(Problem(where=post.path, severity=Severity.WARNING, message=(
                f"canonical URL {post.canonical_url} is also that of {first[key].path}; both are "
                "sent: set a different `canonical_url:` or drop one")))
        else:
            first[key] = post
    return problems


def _url_key(url: str) -> str:
    """One form per page: scheme and host lower-cased, no fragment, no trailing slash."""
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"),
                       parts.query, ""))


def refresh_feeds(config: Config, *, now: datetime | None = None) -> list[FeedReport]:
    """Fetch the configured feeds before planning (each scheduler run). A feed that fails is
    logged and planning goes on with what is stored; returns the reports."""
    if not config.feeds:
        return []
    from pipeline.intake.feeds import fetch_all

    reports = fetch_all(config, now=now)
    for report in reports:
        if report.failed:
            log.warning("feed %s not refreshed (%s); planning with the entries stored", report.name,
                        report.error)
        for warning in report.warnings:
            log.warning("feed %s: %s", report.name, warning)
    return reports
