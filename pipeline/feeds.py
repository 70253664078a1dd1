"""RSS/Atom intake: fetch the feeds named in `sources:`, turn their entries into Posts and keep
them in the state database, so the timetable sends new feed entries like posts.

- Conditional requests: each feed's ETag and Last-Modified are stored and sent back; a 304
  changes nothing.
- Baseline: the first successful fetch of a feed marks its entries as seen and sends none of them,
  except the newest `backfill` ones.
- Settle: an entry is ready once its content has not changed for `settle`; an edit seen later
  updates the stored copy, and the entry's slug (its identity in the ledger) never changes, so an
  entry already sent is not sent again.
- Flood guard: unseen entries dated well before the baseline (an archive re-listed) and any beyond
  the newest `max_new` of one fetch are marked seen, not sent, and reported.
- A feed that fails (HTTP error, timeout, not a feed) is reported in its FeedReport and never
  stops the others; nothing here raises for a bad feed.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlsplit

import feedparser
import httpx
from slugify import slugify
from sqlalchemy import Column, Connection, String, Table, Text, func, insert, select, update

from pipeline.config import Config
from pipeline.content import sanitize
from pipeline.feed_settings import FeedSource
from pipeline.links import absolute
from pipeline.models import Post
from pipeline.render.email import one_line
from pipeline.render.text import plain_text
from pipeline.state import UTCDateTime, engine_for, metadata

log = logging.getLogger(__name__)

MAX_BYTES = 10_000_000          # a feed larger than this is refused
MAX_REDIRECTS = 5
OLD_GRACE = timedelta(days=2)   # an unseen entry dated this long before the baseline is "old"
SUMMARY_WORDS = 60
ACCEPT = "application/atom+xml, application/rss+xml, application/rdf+xml;q=0.9, application/xml;q=0.9, " \
         "text/xml;q=0.8, */*;q=0.5"
# Parse problems that do not mean the document is broken (a feed served as text/plain, say).
_BENIGN = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)
_TAG = re.compile(r"<[A-Za-z!/]")
_ADDRESS_AND_NAME = re.compile(r"\S+@\S+\s*\(([^()]+)\)")


class Status:
    """What the state database holds about an entry. Only NEW entries are ever sent."""

    NEW = "new"               # accepted: sent once settled
    BASELINE = "baseline"     # listed at the first fetch (not sent)
    FILTERED = "filtered"     # caught by include/exclude
    OLD = "old"               # unseen but dated before the baseline: an archive re-listed
    FLOOD = "flood"           # beyond the newest `max_new` of one fetch


feeds = Table(
    "feeds", metadata,
    Column("name", String(100), primary_key=True),
    Column("url", String(2000), nullable=False),
    Column("etag", String(500)),
    Column("last_modified", String(100)),
    Column("title", String(500)),
    Column("link", String(2000)),
    Column("baseline_at", UTCDateTime()),
    Column("last_fetch", UTCDateTime()),
    Column("last_ok", UTCDateTime()),
    Column("last_status", String(20)),
    Column("last_error", Text),
)

feed_entries = Table(
    "feed_entries", metadata,
    Column("feed", String(100), primary_key=True),
    Column("id_hash", String(64), primary_key=True),     # sha256 of the entry's id
    Column("entry_id", Text, nullable=False),            # guid / id, else link
    Column("slug", String(300), nullable=False, unique=True),   # fixed when first seen
    Column("status", String(10), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("post", Text, nullable=False),                # the Post's fields as JSON
    Column("first_seen", UTCDateTime(), nullable=False),
    Column("changed_at", UTCDateTime(), nullable=False),  # last content change (settle counts from it)
    Column("updated_at", UTCDateTime(), nullable=False),
)


@dataclass(frozen=True, kw_only=True)
class FeedReport:
    """What one fetch of one feed did."""

    name: str
    url: str
    status: str                   # "ok" | "not-modified" | "error"
    new: int = 0                  # entries accepted by this fetch
    held: int = 0                 # accepted entries still settling (not ready yet)
    baseline: int = 0             # marked seen by the first fetch, not sent
    filtered: int = 0             # caught by include/exclude
    skipped: int = 0              # flood guard: old or too many
    updated: int = 0              # entries whose content changed
    error: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status == "error"


class FeedError(Exception):
    """A feed could not be fetched or read; the message says why, in one line."""


@dataclass(frozen=True, kw_only=True)
class _Download:
    status: int
    body: bytes
    headers: Mapping[str, str]
    url: str                      # after redirects


@dataclass(frozen=True, kw_only=True)
class _Entry:
    """One entry of a fetched feed, converted, before it is matched with what is stored."""

    entry_id: str
    id_hash: str
    index: int                    # position in the document (first: newest, usually)
    fields: dict[str, Any]        # the Post's fields, JSON-ready, without slug and date
    dated: datetime | None        # published, else updated
    changed: datetime | None      # updated, else published
    categories: tuple[str, ...]
    content_hash: str


@dataclass
class _Counts:
    new: int = 0
    baseline: int = 0
    filtered: int = 0
    skipped: int = 0
    updated: int = 0
    warnings: list[str] = field(default_factory=list)


# -- fetching -----------------------------------------------------------------------------------

def fetch_all(config: Config, *, now: datetime | None = None) -> list[FeedReport]:
    """Fetch every feed in `sources:`, store new and changed entries, and report per feed.
    Never raises for a bad feed: its report says what went wrong."""
    now = now or datetime.now(UTC)
    if not config.feeds:
        return []
    headers = {"User-Agent": user_agent(config), "Accept": ACCEPT}
    with httpx.Client(headers=headers, follow_redirects=True, max_redirects=MAX_REDIRECTS) as client:
        return [_guarded(config, source, client, now) for source in config.feeds]


def _guarded(config: Config, source: FeedSource, client: httpx.Client, now: datetime) -> FeedReport:
    """`fetch_feed`, with a bug met on one feed's content logged (with its traceback) and reported
    as that feed's error, so the other feeds and the run go on."""
    try:
        return fetch_feed(config, source, client, now=now)
    except Exception as exc:
        log.exception("feed %s: unexpected error", source.name)
        return _failed(config, source, f"unexpected error ({type(exc).__name__}: {one_line(str(exc))}); "
                                       "this is a bug in the pipeline, please report it", now)


def user_agent(config: Config) -> str:
    """The User-Agent of feed requests: names the pipeline and the site that runs it."""
    try:
        release = version("pipeline")
    except PackageNotFoundError:
        release = "0"
    return f"pipeline/{release} (newsletter feed reader; +{config.site.url})"


def fetch_feed(config: Config, source: FeedSource, client: httpx.Client, *, now: datetime) -> FeedReport:
    """Fetch one feed and store what it lists. Failures are recorded and reported, not raised."""
    engine = engine_for(config)
    with engine.connect() as conn:
        state = conn.execute(select(feeds).where(feeds.c.name == source.name)).first()
    same_url = state is not None and state.url == source.url
    try:
        download = _download(client, source, etag=state.etag if same_url else None,
                             modified=state.last_modified if same_url else None)
        if download.status == 304:
            return _not_modified(config, source, now)
        parsed, warnings = _parse(download)
        entries, problems = _entries(parsed, source, download.url)
    except FeedError as exc:
        return _failed(config, source, str(exc), now)
    with engine.begin() as conn:
        counts = _store(conn, source, entries, state.baseline_at if state else None, now)
        _save_state(conn, source, now, status="ok", error=None, download=download, parsed=parsed,
                    baseline=bool(state and state.baseline_at))
    counts.warnings[:0] = [*warnings, *problems]
    for warning in counts.warnings:
        log.info("feed %s: %s", source.name, warning)
    return FeedReport(name=source.name, url=source.url, status="ok", new=counts.new,
                      held=_held(config, source, now), baseline=counts.baseline,
                      filtered=counts.filtered, skipped=counts.skipped, updated=counts.updated,
                      warnings=tuple(counts.warnings))


def _download(client: httpx.Client, source: FeedSource, *, etag: str | None,
              modified: str | None) -> _Download:
    """GET the feed, conditionally. Raises FeedError with a one-line reason."""
    headers = {k: v for k, v in (("If-None-Match", etag), ("If-Modified-Since", modified)) if v}
    try:
        with client.stream("GET", source.url, headers=headers, timeout=source.timeout) as response:
            if response.status_code == 304:
                return _Download(status=304, body=b"", headers=response.headers, url=str(response.url))
            if response.status_code >= 400:
                code = response.status_code
                raise FeedError(f"HTTP {code} {httpx.codes.get_reason_phrase(code) or response.reason_phrase}"
                                .strip())
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise FeedError(f"larger than {MAX_BYTES // 1_000_000} MB; not read")
            return _Download(status=response.status_code, body=bytes(body), headers=response.headers,
                             url=str(response.url))
    except httpx.TimeoutException:
        raise FeedError(f"timed out after {source.timeout:g}s (raise `timeout:` if the server is slow)"
                        ) from None
    except httpx.TooManyRedirects:
        raise FeedError(f"more than {MAX_REDIRECTS} redirects") from None
    except httpx.HTTPError as exc:
        raise FeedError(f"cannot fetch ({type(exc).__name__}: {one_line(str(exc)) or 'no detail'})"
                        ) from None


def _parse(download: _Download) -> tuple[Any, list[str]]:
    """feedparser over the body. Raises FeedError for a document that is not a feed or is too
    broken to list any entry; a feed read despite XML errors parses with a warning."""
    headers = {"content-location": download.url}
    if download.headers.get("content-type"):
        headers["content-type"] = download.headers["content-type"]
    parsed = feedparser.parse(download.body, response_headers=headers, resolve_relative_uris=False)
    problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
    if isinstance(problem, _BENIGN):
        problem = None
    reason = one_line(str(problem)) if problem is not None else ""
    if not parsed.get("version") and not parsed.entries:
        raise FeedError("not an RSS or Atom feed" + (f" (malformed XML: {reason})" if reason else
                                                      " (got a page that is not a feed)"))
    if problem is not None and not parsed.entries:
        raise FeedError(f"malformed XML ({reason}); no entry could be read")
    return parsed, ([f"malformed XML ({reason}); read {len(parsed.entries)} entries leniently"]
                    if problem is not None else [])


def _not_modified(config: Config, source: FeedSource, now: datetime) -> FeedReport:
    with engine_for(config).begin() as conn:
        conn.execute(update(feeds).where(feeds.c.name == source.name)
                     .values(last_fetch=now, last_ok=now, last_status="not-modified", last_error=None))
    return FeedReport(name=source.name, url=source.url, status="not-modified",
                      held=_held(config, source, now))


def _failed(config: Config, source: FeedSource, error: str, now: datetime) -> FeedReport:
    log.info("feed %s (%s): %s", source.name, source.url, error)
    with engine_for(config).begin() as conn:
        _save_state(conn, source, now, status="error", error=error)
    return FeedReport(name=source.name, url=source.url, status="error", error=error,
                      held=_held(config, source, now))


def _save_state(conn: Connection, source: FeedSource, now: datetime, *, status: str,
                error: str | None, download: _Download | None = None, parsed: Any = None,
                baseline: bool = True) -> None:
    """Upsert the feed's row: the outcome, and after a good fetch its validators and title."""
    values: dict[str, Any] = {"url": source.url, "last_fetch": now, "last_status": status,
                              "last_error": error}
    if download is not None:
        values.update(etag=download.headers.get("etag"), last_modified=download.headers.get("last-modified"),
                      last_ok=now, title=one_line(parsed.feed.get("title", ""))[:500] or None,
                      link=(parsed.feed.get("link") or "")[:2000] or None)
        if not baseline:
            values["baseline_at"] = now
    exists = conn.execute(select(feeds.c.name).where(feeds.c.name == source.name)).first()
    if exists:
        if download is None:   # a failed fetch keeps the validators of the last good one
            values.pop("url")
        conn.execute(update(feeds).where(feeds.c.name == source.name).values(**values))
    else:
        conn.execute(insert(feeds).values(name=source.name, **values))


# -- entries -> posts ---------------------------------------------------------------------------

def _entries(parsed: Any, source: FeedSource, base: str) -> tuple[list[_Entry], list[str]]:
    """The entries of a parsed feed; an entry that cannot become a post is a warning."""
    out: list[_Entry] = []
    problems: list[str] = []
    seen: set[str] = set()
    feed_author = (parsed.feed.get("author_detail") or {}).get("name") or None
    for index, raw in enumerate(parsed.entries):
        try:
            entry = convert(raw, source, base=base, index=index, feed_author=feed_author)
        except FeedError as exc:
            problems.append(f"entry {index + 1}: {exc}; skipped")
            continue
        if entry.id_hash not in seen:       # a feed listing one entry twice: the first counts
            seen.add(entry.id_hash)
            out.append(entry)
    return out, problems


def convert(raw: Mapping[str, Any], source: FeedSource, *, base: str, index: int = 0,
            feed_author: str | None = None) -> _Entry:
    """One feedparser entry -> _Entry (a Post's fields). Raises FeedError for an entry without
    a usable link."""
    link = _link(raw, base)
    entry_id = str(raw.get("id") or raw.get("link") or "").strip() or link
    body, has_content = _body(raw, link)
    title = _title(raw, body, link)
    categories = tuple(dict.fromkeys(c for c in (one_line(t.get("label") or t.get("term") or "")
                                                 for t in raw.get("tags") or []) if c))
    author = _author(raw)
    dated = _when(raw, "published_parsed", "updated_parsed")
    fields = {
        "path": f"feed:{source.name}:{entry_id}", "title": title, "canonical_url": link,
        "body_html": body, "body_markdown": body,   # Markdown accepts the (sanitized) HTML as is
        "summary": _summary(raw, link) if has_content else None,
        "author": author or source.author or feed_author, "tags": _tags(source.tags, categories),
        "image": _image(raw, link), "published": dated.isoformat() if dated else None,
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return _Entry(entry_id=entry_id, id_hash=hashlib.sha256(entry_id.encode()).hexdigest(), index=index,
                  fields=fields, dated=dated, changed=_when(raw, "updated_parsed", "published_parsed"),
                  categories=categories, content_hash=digest)


def _link(raw: Mapping[str, Any], base: str) -> str:
    candidates = [raw.get("link"), *(lk.get("href") for lk in raw.get("links") or []
                                     if lk.get("rel") in (None, "alternate")), raw.get("id")]
    for candidate in candidates:
        if candidate:
            url = absolute(str(candidate), base)
            if urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc:
                return url
    raise FeedError("no http(s) link to the article")


def _body(raw: Mapping[str, Any], link: str) -> tuple[str, bool]:
    """The sanitized HTML of the entry (its content, else its summary; links absolute against
    the entry's link), and whether the entry had content apart from its summary."""
    contents = [c for c in raw.get("content") or [] if c.get("value")]
    chosen = next((c for c in contents if "html" in (c.get("type") or "")), contents[0] if contents else None)
    if chosen is None and raw.get("summary"):
        chosen = raw.get("summary_detail") or {"type": "text/html", "value": raw["summary"]}
    if chosen is None:
        return f'<p><a href="{html.escape(link)}">{html.escape(link)}</a></p>', False
    value = str(chosen.get("value") or "")
    if "html" not in (chosen.get("type") or "text/html"):
        value = html.escape(value)
    if not _TAG.search(value):      # text (RSS descriptions often are): one paragraph per blank line
        value = "".join(f"<p>{p.strip()}</p>" for p in re.split(r"\n\s*\n", value) if p.strip())
    cleaned = sanitize(value, rewrite=lambda url: absolute(url, link)).strip()
    return cleaned or f'<p><a href="{html.escape(link)}">{html.escape(link)}</a></p>', bool(contents)


def _title(raw: Mapping[str, Any], body: str, link: str) -> str:
    title = str(raw.get("title") or "")
    if "html" in ((raw.get("title_detail") or {}).get("type") or ""):   # Atom type="html": markup
        title = plain_text(title)
    title = one_line(title)
    if title:
        return title[:300]
    words = plain_text(body).split()
    return " ".join(words[:12]) + ("…" if len(words) > 12 else "") if words else link


def _summary(raw: Mapping[str, Any], link: str) -> str | None:
    """The entry's summary as text, cut at a word after SUMMARY_WORDS words."""
    value = str(raw.get("summary") or "")
    if "html" not in ((raw.get("summary_detail") or {}).get("type") or "text/html"):
        value = f"<p>{html.escape(value)}</p>"
    words = plain_text(sanitize(value, rewrite=lambda url: absolute(url, link))).split()
    if not words:
        return None
    cut = " ".join(words[:SUMMARY_WORDS])
    return cut.rstrip(" ,;:.–—-") + "…" if len(words) > SUMMARY_WORDS else cut


def _tags(configured: Sequence[str], categories: Iterable[str]) -> list[str]:
    """The source's tags first (they lead the hashtags), then the entry's categories; no
    duplicates, ignoring case."""
    out: dict[str, str] = {}
    for tag in (*configured, *categories):
        out.setdefault(tag.lower(), tag)
    return list(out.values())


def _image(raw: Mapping[str, Any], link: str) -> str | None:
    """An image enclosure, else media:content with an image, else media:thumbnail."""
    found = [e.get("href") for e in raw.get("enclosures") or []
             if str(e.get("type", "")).startswith("image/")]
    found += [m.get("url") for m in raw.get("media_content") or []
              if m.get("medium") == "image" or str(m.get("type", "")).startswith("image/")]
    found += [m.get("url") for m in raw.get("media_thumbnail") or []]
    for url in found:
        if url:
            resolved = absolute(str(url), link)
            if urlsplit(resolved).scheme in ("http", "https"):
                return resolved
    return None


def _author(raw: Mapping[str, Any]) -> str:
    """The entry's author's name: RSS's "address (Name)" form gives Name; an address alone is
    not shown (it would publish someone's email address)."""
    text = one_line(raw.get("author") or "")
    named = _ADDRESS_AND_NAME.fullmatch(text)
    if named:
        return one_line(named[1])
    if re.fullmatch(r"\S+@\S+", text):
        return ""
    return one_line((raw.get("author_detail") or {}).get("name") or text)


def _when(raw: Mapping[str, Any], *keys: str) -> datetime | None:
    for key in keys:
        parsed = dict.get(raw, key) if isinstance(raw, dict) else raw.get(key)   # no aliases
        if parsed:
            return datetime(*parsed[:6], tzinfo=UTC)   # feedparser gives UTC
    return None


def entry_slug(source: FeedSource, title: str, entry_id: str) -> str:
    """`<feed name>-<title, cut>-<hash of the entry id>`: fixed when the entry is first seen."""
    words = slugify(title, max_length=50, word_boundary=True)
    short = hashlib.sha256(entry_id.encode()).hexdigest()[:8]
    return "-".join(p for p in (slugify(source.name), words, short) if p)


# -- storing ------------------------------------------------------------------------------------

def _store(conn: Connection, source: FeedSource, entries: list[_Entry], baseline_at: datetime | None,
           now: datetime) -> _Counts:
    """Match the fetched entries with the stored ones: update changed ones, classify unseen ones."""
    stored = {r.id_hash: r for r in conn.execute(
        select(feed_entries.c.id_hash, feed_entries.c.content_hash, feed_entries.c.slug,
               feed_entries.c.first_seen).where(feed_entries.c.feed == source.name))}
    counts = _Counts()
    for entry in entries:
        row = stored.get(entry.id_hash)
        if row is not None and row.content_hash != entry.content_hash:
            conn.execute(update(feed_entries).where(feed_entries.c.feed == source.name,
                                                    feed_entries.c.id_hash == entry.id_hash)
                         .values(content_hash=entry.content_hash, changed_at=now, updated_at=now,
                                 post=_post_json(entry, row.slug, row.first_seen)))
            counts.updated += 1
    unseen = [e for e in entries if e.id_hash not in stored]
    for entry, status in _classify(source, unseen, baseline_at, now, counts):
        slug = entry_slug(source, entry.fields["title"], entry.entry_id)
        changed = min(entry.changed or now, now)
        conn.execute(insert(feed_entries).values(
            feed=source.name, id_hash=entry.id_hash, entry_id=entry.entry_id, slug=slug, status=status,
            content_hash=entry.content_hash, post=_post_json(entry, slug, now), first_seen=now,
            changed_at=changed, updated_at=now))
    return counts


def _classify(source: FeedSource, unseen: list[_Entry], baseline_at: datetime | None, now: datetime,
              counts: _Counts) -> list[tuple[_Entry, str]]:
    """The status of each unseen entry: baseline (first fetch, but for `backfill`), filtered,
    old, flood, or new; counts updated and flood warnings added."""
    newest_first = sorted(unseen, key=lambda e: (e.dated or now, -e.index), reverse=True)
    wanted = [e for e in newest_first if source.wanted(e.fields["title"], e.categories)]
    kept = {e.id_hash for e in wanted}
    out = [(e, Status.FILTERED) for e in newest_first if e.id_hash not in kept]
    counts.filtered = len(out)
    if baseline_at is None:
        out += [(e, Status.NEW if i < source.backfill else Status.BASELINE) for i, e in enumerate(wanted)]
        counts.new = min(len(wanted), source.backfill)
        counts.baseline = len(wanted) - counts.new
        return out
    old = [e for e in wanted if e.dated is not None and e.dated < baseline_at - OLD_GRACE]
    fresh = [e for e in wanted if e.dated is None or e.dated >= baseline_at - OLD_GRACE]
    flood = fresh[source.max_new:]
    out += [(e, Status.OLD) for e in old] + [(e, Status.FLOOD) for e in flood]
    out += [(e, Status.NEW) for e in fresh[:source.max_new]]
    counts.new, counts.skipped = len(fresh) - len(flood), len(old) + len(flood)
    if old:
        counts.warnings.append(f"{len(old)} unseen entries are dated before this feed was first "
                               "fetched (an archive re-listed?); marked seen, not sent")
    if flood:
        counts.warnings.append(f"{len(fresh)} new entries in one fetch, more than max_new "
                               f"({source.max_new}); the newest {source.max_new} are kept, "
                               f"{len(flood)} marked seen, not sent")
    return out


def _post_json(entry: _Entry, slug: str, first_seen: datetime) -> str:
    date = entry.dated or first_seen
    return json.dumps({**entry.fields, "slug": slug, "date": date.isoformat()}, ensure_ascii=False)


# -- reading ------------------------------------------------------------------------------------

def _ready_at(row: Any, source: FeedSource) -> datetime:
    return max(row.first_seen, row.changed_at + source.settle_time)


def _held(config: Config, source: FeedSource, now: datetime) -> int:
    with engine_for(config).connect() as conn:
        rows = conn.execute(select(feed_entries.c.first_seen, feed_entries.c.changed_at)
                            .where(feed_entries.c.feed == source.name,
                                   feed_entries.c.status == Status.NEW))
        return sum(_ready_at(r, source) > now for r in rows)


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
    return [_post(json.loads(row.post), _ready_at(row, by_name[row.feed]), config) for row in rows]


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


def _post(data: dict[str, Any], ready: datetime, config: Config) -> Post:
    """A stored entry as a Post, dated in the config's time zone (as the footer shows it)."""
    return Post(path=data["path"], slug=data["slug"], title=data["title"],
                date=datetime.fromisoformat(data["date"]).astimezone(config.tz),
                canonical_url=data["canonical_url"],
                body_markdown=data["body_markdown"], body_html=data["body_html"], author=data["author"],
                summary=data["summary"], tags=tuple(data["tags"]), image=data["image"],
                available_at=ready)
