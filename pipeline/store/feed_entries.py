"""The feeds' memory: each feed's last fetch (its validators and baseline) and its entries, kept
as a Post's fields, and the accepted entries read back as Posts to send.

An entry's slug (its identity in the ledger) is fixed when it is first stored, and an edit seen
later updates the stored copy under that slug, so an entry already sent is not sent again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, update

from pipeline.config import Config
from pipeline.fields import RANGE, date_in_range, is_http_url
from pipeline.models import Post
from pipeline.store.engine import engine_for
from pipeline.store.schema import feed_entries, feeds

log = logging.getLogger(__name__)
_warned: set[tuple[str, str, str]] = set()     # (feed, slug, reason) of damaged rows already logged


class Status:
    """What the state database holds about an entry. Only NEW entries are ever sent."""

    NEW = "new"               # accepted: sent once settled
    BASELINE = "baseline"     # listed at the first fetch (not sent)
    FILTERED = "filtered"     # caught by include/exclude
    OLD = "old"               # unseen but dated before the baseline: an archive re-listed
    FLOOD = "flood"           # beyond the newest `max_new` of one fetch
    HELD = "held"             # new in a feed read only leniently (broken XML): kept, not sent,
                              # until a fetch parses cleanly (or the feed sets `lenient: true`)


@dataclass(frozen=True, kw_only=True)
class FetchedEntry:
    """One entry of a fetched feed, converted, before it is matched with what is stored."""

    entry_id: str
    id_hash: str
    index: int                    # position in the document (first: newest, usually)
    fields: dict[str, Any]        # the Post's fields, JSON-ready, without slug and date
    dated: datetime | None        # published, else updated
    changed: datetime | None      # updated, else published
    categories: tuple[str, ...]
    content_hash: str


# -- a feed's own row ---------------------------------------------------------------------------

def feed_state(engine: Engine, name: str) -> Row[Any] | None:
    """The feed's row (url, etag, last_modified, baseline_at, ...), or None before its first fetch."""
    with engine.connect() as conn:
        return conn.execute(select(feeds).where(feeds.c.name == name)).first()


def mark_not_modified(engine: Engine, name: str, now: datetime) -> None:
    """A conditional fetch answered 304: the feed is fine and nothing changed."""
    with engine.begin() as conn:
        conn.execute(update(feeds).where(feeds.c.name == name)
                     .values(last_fetch=now, last_ok=now, last_status="not-modified", last_error=None))


def record_fetch(conn: Connection, name: str, url: str, now: datetime, *, status: str,
                 error: str | None, fetched: dict[str, str | None] | None = None,
                 baseline: bool = True) -> None:
    """Upsert the feed's row: the outcome, and after a good fetch (`fetched`: its etag,
    last_modified, title and link) its validators; `baseline=False` marks the first good fetch."""
    values: dict[str, Any] = {"url": url, "last_fetch": now, "last_status": status, "last_error": error}
    if fetched is not None:
        values.update(fetched, last_ok=now)
        if not baseline:
            values["baseline_at"] = now
    exists = conn.execute(select(feeds.c.name).where(feeds.c.name == name)).first()
    if exists:
        if fetched is None:   # a failed fetch keeps the validators of the last good one
            values.pop("url")
        conn.execute(update(feeds).where(feeds.c.name == name).values(**values))
    else:
        conn.execute(insert(feeds).values(name=name, **values))


# -- entries ------------------------------------------------------------------------------------

def stored_entries(conn: Connection, feed: str) -> dict[str, Row[Any]]:
    """id_hash -> (id_hash, content_hash, slug, first_seen) of every entry stored for the feed."""
    return {r.id_hash: r for r in conn.execute(
        select(feed_entries.c.id_hash, feed_entries.c.content_hash, feed_entries.c.slug,
               feed_entries.c.first_seen).where(feed_entries.c.feed == feed))}


def update_changed(conn: Connection, feed: str, entries: Sequence[FetchedEntry],
                   stored: dict[str, Row[Any]], now: datetime) -> None:
    """Store the new content of entries already known, under their slugs; settling restarts."""
    for entry in entries:
        row = stored[entry.id_hash]
        conn.execute(update(feed_entries).where(feed_entries.c.feed == feed,
                                                feed_entries.c.id_hash == entry.id_hash)
                     .values(content_hash=entry.content_hash, changed_at=now, updated_at=now,
                             post=_post_json(entry, row.slug, row.first_seen)))


def insert_new(conn: Connection, feed: str, entries: Sequence[tuple[FetchedEntry, str, str]],
               now: datetime) -> None:
    """Store unseen entries, each as (entry, status, slug)."""
    for entry, status, slug in entries:
        conn.execute(insert(feed_entries).values(
            feed=feed, id_hash=entry.id_hash, entry_id=entry.entry_id, slug=slug, status=status,
            content_hash=entry.content_hash, post=_post_json(entry, slug, now), first_seen=now,
            changed_at=min(entry.changed or now, now), updated_at=now))


def release_held(conn: Connection, feed: str, listed: set[str], now: datetime) -> tuple[int, int]:
    """After a fetch that parsed cleanly: the feed's HELD entries it lists (`listed`: id hashes)
    become NEW, settling from `now` (so a digest counts them from now, not from when they were first
    seen); the others, which only a broken document ever listed, are forgotten (a clean fetch that
    lists one later finds it new). Returns (released, forgotten)."""
    held_rows = {r.id_hash for r in conn.execute(select(feed_entries.c.id_hash).where(
        feed_entries.c.feed == feed, feed_entries.c.status == Status.HELD))}
    released = held_rows & listed
    if released:
        conn.execute(update(feed_entries)
                     .where(feed_entries.c.feed == feed, feed_entries.c.id_hash.in_(list(released)))
                     .values(status=Status.NEW, changed_at=now, updated_at=now))
    forgotten = held_rows - listed
    if forgotten:
        conn.execute(feed_entries.delete()
                     .where(feed_entries.c.feed == feed, feed_entries.c.id_hash.in_(list(forgotten))))
    return len(released), len(forgotten)


def count_status(engine: Engine, feed: str, status: str) -> int:
    """How many of the feed's stored entries have `status`."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(feed_entries.c.feed == feed,
                                                       feed_entries.c.status == status)).scalar_one()


def _post_json(entry: FetchedEntry, slug: str, first_seen: datetime) -> str:
    date = entry.dated or first_seen
    return json.dumps({**entry.fields, "slug": slug, "date": date.isoformat()}, ensure_ascii=False)


# -- reading back -------------------------------------------------------------------------------

def _ready_at(row: Any, settle: timedelta) -> datetime:
    try:
        return max(row.first_seen, row.changed_at + settle)
    except OverflowError:    # a damaged row's timestamp near year 9999: it never settles
        return datetime.max.replace(tzinfo=UTC)


def held(engine: Engine, feed: str, settle: timedelta, now: datetime) -> int:
    """How many accepted entries of the feed are still settling at `now`."""
    with engine.connect() as conn:
        rows = conn.execute(select(feed_entries.c.first_seen, feed_entries.c.changed_at)
                            .where(feed_entries.c.feed == feed, feed_entries.c.status == Status.NEW))
        return sum(_ready_at(r, settle) > now for r in rows)


def ready_posts(config: Config, *, now: datetime | None = None) -> list[Post]:
    """The accepted entries of the configured feeds that have settled by `now`, as Posts
    (`available_at` set to when each became ready). Reads only the state database."""
    now = now or datetime.now(UTC)
    return [p for p in stored_posts(config) if p.available_at is None or p.available_at <= now]


def stored_posts(config: Config) -> list[Post]:
    """Every accepted entry of the configured feeds as a Post, settled or not (`available_at`:
    when it is, or will be, ready to send)."""
    by_name = {s.name: s for s in config.feeds}
    if not by_name:
        return []
    with engine_for(config).connect() as conn:
        rows = conn.execute(select(feed_entries).where(feed_entries.c.feed.in_(list(by_name)),
                                                       feed_entries.c.status == Status.NEW)).all()
    posts = []
    for row in rows:
        # One damaged row (an older version's, a hand edit) is skipped, never the whole run.
        try:
            posts.append(_post(row, by_name[row.feed].settle_time, config))
        except ValueError as exc:
            if (row.feed, row.slug, str(exc)) not in _warned:   # once a process, not every read
                _warned.add((row.feed, row.slug, str(exc)))
                log.warning("feed %s: stored entry %s %s; skipped", row.feed, row.slug, exc)
    return posts


def stored_version(config: Config) -> str:
    """Changes whenever an accepted entry of the configured feeds is added or updated."""
    if not config.feeds:
        return ""
    query = (select(func.count(), func.max(feed_entries.c.updated_at))
             .where(feed_entries.c.feed.in_([s.name for s in config.feeds]),
                    feed_entries.c.status == Status.NEW))
    with engine_for(config).connect() as conn:
        count, last = conn.execute(query).one()
    return f"{count}:{last}"


def _post(row: Any, settle: timedelta, config: Config) -> Post:
    """A stored entry as a Post, dated in the config's time zone (as the footer shows it).
    Raises ValueError saying what is wrong with a row no Post can be made of: its dates outside
    1970-2200 (date arithmetic would overflow later), its link not http(s), fields missing."""
    try:
        data = json.loads(row.post)
        when = datetime.fromisoformat(data["date"])
    except (TypeError, KeyError, ValueError):
        raise ValueError("has no readable date") from None
    for stamp in (when, row.first_seen, row.changed_at):
        if not date_in_range(stamp):
            raise ValueError(f"is dated {stamp.isoformat()}, outside {RANGE}")
    if not is_http_url(str(data.get("canonical_url"))):
        raise ValueError(f"links to {data.get('canonical_url')!r}, not an http(s) URL")
    image = data.get("image")
    try:
        return Post(path=data["path"], slug=data["slug"], title=data["title"],
                    date=(when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(config.tz),
                    canonical_url=data["canonical_url"],
                    body_markdown=data["body_markdown"], body_html=data["body_html"],
                    author=data["author"], summary=data["summary"], tags=tuple(data["tags"]),
                    image=image if isinstance(image, str) and is_http_url(image) else None,
                    available_at=_ready_at(row, settle))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"is incomplete ({exc})") from None
