"""RSS/Atom intake: fetch the feeds named in `sources:`, turn their entries into Posts and keep
them in the state database (`store/feed_entries.py`), so the timetable sends new feed entries
like posts.

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
- Hostile feeds: `timeout` bounds the whole download (redirects included); no connection goes to
  an internal address (loopback, private, link-local, ...) unless the feed's own url is on one;
  entries whose title or link holds template syntax, or whose link is not http(s), are refused;
  dates outside 1970-2200 count as absent; a feed read only leniently (broken XML) has its new
  entries held until a clean fetch, unless it sets `lenient: true`.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import feedparser
import httpx
from slugify import slugify
from sqlalchemy import Connection, Engine

from pipeline.config import Config
from pipeline.fields import date_in_range, is_http_url, out_of_range
from pipeline.intake.feed_http import AddressRefused, guarded_client
from pipeline.intake.feed_settings import FeedSource
from pipeline.intake.posts import sanitize
from pipeline.render.email import one_line
from pipeline.render.links import absolute, body_url
from pipeline.render.text import plain_text
from pipeline.store import feed_entries
from pipeline.store.engine import engine_for
from pipeline.store.feed_entries import FetchedEntry, Status

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
# Jinja / Liquid syntax: a title or link holding it could be evaluated by a template downstream
# (ours, or a cross-posting site's: dev.to renders Liquid tags).
_TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOLD_HINT = "until the feed parses cleanly (or set `lenient: true`)"


@dataclass(frozen=True, kw_only=True)
class FeedReport:
    """What one fetch of one feed did."""

    name: str
    url: str
    status: str                   # "ok" | "not-modified" | "error"
    new: int = 0                  # entries accepted by this fetch
    held: int = 0                 # accepted entries not ready yet: settling, or waiting for a clean fetch
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
    return [_guarded(config, source, headers, now) for source in config.feeds]


def _guarded(config: Config, source: FeedSource, headers: Mapping[str, str], now: datetime) -> FeedReport:
    """`fetch_feed`, with a bug met on one feed's content logged (with its traceback) and reported
    as that feed's error, so the other feeds and the run go on."""
    try:
        return fetch_feed(config, source, now=now, headers=headers)
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


def fetch_feed(config: Config, source: FeedSource, *, now: datetime,
               headers: Mapping[str, str] | None = None) -> FeedReport:
    """Fetch one feed and store what it lists. Failures are recorded and reported, not raised.
    `headers`: sent with the request (default: the User-Agent and Accept of `fetch_all`)."""
    engine = engine_for(config)
    state = feed_entries.feed_state(engine, source.name)
    same_url = state is not None and state.url == source.url
    try:
        download = _download(source, headers or {"User-Agent": user_agent(config), "Accept": ACCEPT},
                             etag=state.etag if same_url else None,
                             modified=state.last_modified if same_url else None)
        if download.status == 304:
            return _not_modified(config, source, now)
        parsed, broken = _parse(download)
        entries, problems = _entries(parsed, source, download.url)
    except FeedError as exc:
        return _failed(config, source, str(exc), now)
    warnings = ([f"malformed XML ({broken}); read {len(parsed.entries)} entries leniently"]
                if broken is not None else [])
    with engine.begin() as conn:
        counts = _store(conn, source, entries, state.baseline_at if state else None, now,
                        clean=broken is None)
        feed_entries.record_fetch(conn, source.name, source.url, now, status="ok", error=None,
                                  fetched=_validators(download, parsed),
                                  baseline=bool(state and state.baseline_at))
    counts.warnings[:0] = [*warnings, *problems]
    for warning in counts.warnings:
        log.info("feed %s: %s", source.name, warning)
    return FeedReport(name=source.name, url=source.url, status="ok", new=counts.new,
                      held=_held(engine, source, now), baseline=counts.baseline,
                      filtered=counts.filtered, skipped=counts.skipped, updated=counts.updated,
                      warnings=tuple(counts.warnings))


def _download(source: FeedSource, headers: Mapping[str, str], *, etag: str | None,
              modified: str | None) -> _Download:
    """GET the feed, conditionally, within `source.timeout` seconds in all. Raises FeedError with a
    one-line reason."""
    conditional = {k: v for k, v in (("If-None-Match", etag), ("If-Modified-Since", modified)) if v}
    try:
        with (guarded_client(source.url, deadline=time.monotonic() + source.timeout, headers=headers,
                             timeout=source.timeout, max_redirects=MAX_REDIRECTS) as client,
              client.stream("GET", source.url, headers=conditional) as response):
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
    except AddressRefused as exc:
        hop = exc.url or source.url
        what = "" if hop == str(httpx.URL(source.url)) else "a redirect to "
        raise FeedError(f"refused {what}{hop} ({exc}; a feed may reach internal addresses only when "
                        "its own url is on one)") from None
    except httpx.TimeoutException:
        raise FeedError(f"timed out after {source.timeout:g}s (raise `timeout:` if the server is slow)"
                        ) from None
    except httpx.TooManyRedirects:
        raise FeedError(f"more than {MAX_REDIRECTS} redirects") from None
    except httpx.HTTPError as exc:
        raise FeedError(f"cannot fetch ({type(exc).__name__}: {one_line(str(exc)) or 'no detail'})"
                        ) from None


def _parse(download: _Download) -> tuple[Any, str | None]:
    """feedparser over the body, and for a feed read only leniently (despite XML errors) what is
    wrong with it. Raises FeedError for a document that is not a feed or is too broken to list any
    entry."""
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
    return parsed, (reason if problem is not None else None)


def _not_modified(config: Config, source: FeedSource, now: datetime) -> FeedReport:
    engine = engine_for(config)
    feed_entries.mark_not_modified(engine, source.name, now)
    return FeedReport(name=source.name, url=source.url, status="not-modified",
                      held=_held(engine, source, now))


def _failed(config: Config, source: FeedSource, error: str, now: datetime) -> FeedReport:
    log.info("feed %s (%s): %s", source.name, source.url, error)
    engine = engine_for(config)
    with engine.begin() as conn:
        feed_entries.record_fetch(conn, source.name, source.url, now, status="error", error=error)
    return FeedReport(name=source.name, url=source.url, status="error", error=error,
                      held=_held(engine, source, now))


def _held(engine: Engine, source: FeedSource, now: datetime) -> int:
    """Accepted entries not ready yet: still settling, or held until the feed parses cleanly."""
    return (feed_entries.held(engine, source.name, source.settle_time, now)
            + feed_entries.count_status(engine, source.name, Status.HELD))


def _validators(download: _Download, parsed: Any) -> dict[str, str | None]:
    """What a good fetch tells of the feed: its validators for the next request, and its title."""
    return {"etag": download.headers.get("etag"), "last_modified": download.headers.get("last-modified"),
            "title": one_line(parsed.feed.get("title", ""))[:500] or None,
            "link": (parsed.feed.get("link") or "")[:2000] or None}


# -- entries -> posts ---------------------------------------------------------------------------

def _entries(parsed: Any, source: FeedSource, base: str) -> tuple[list[FetchedEntry], list[str]]:
    """The entries of a parsed feed; an entry that cannot become a post, or had to be mended (a
    date out of range), is a warning naming it."""
    out: list[FetchedEntry] = []
    problems: list[str] = []
    seen: set[str] = set()
    feed_author = (parsed.feed.get("author_detail") or {}).get("name") or None
    for index, raw in enumerate(parsed.entries):
        try:
            entry, notes = convert(raw, source, base=base, index=index, feed_author=feed_author)
        except FeedError as exc:
            problems.append(f"entry {index + 1}: {exc}; skipped")
            continue
        problems += [f"entry {index + 1} {_shown(entry.fields['title'])}: {note}" for note in notes]
        if entry.id_hash not in seen:       # a feed listing one entry twice: the first counts
            seen.add(entry.id_hash)
            out.append(entry)
    return out, problems


def convert(raw: Mapping[str, Any], source: FeedSource, *, base: str, index: int = 0,
            feed_author: str | None = None) -> tuple[FetchedEntry, list[str]]:
    """One feedparser entry -> FetchedEntry (a Post's fields), and what had to be mended in it (a
    date out of range, dropped). Raises FeedError for an entry without a usable link, or whose
    title or link holds template syntax."""
    link = _link(raw, base)
    entry_id = str(raw.get("id") or raw.get("link") or "").strip() or link
    body, has_content = _body(raw, link)
    title = _title(raw, body, link)
    if _TEMPLATE.search(title):
        raise FeedError(f"title {_shown(title)} holds template syntax")
    categories = tuple(dict.fromkeys(c for c in (one_line(t.get("label") or t.get("term") or "")
                                                 for t in raw.get("tags") or []) if c))
    author = _author(raw)
    dates, dropped = _dates(raw)
    dated = dates["published"] or dates["updated"]
    notes = [f"{note}; {'dated when first seen' if dated is None else 'ignored'}" for note in dropped]
    fields = {
        "path": f"feed:{source.name}:{entry_id}", "title": title, "canonical_url": link,
        "body_html": body, "body_markdown": body,   # Markdown accepts the (sanitized) HTML as is
        "summary": _summary(raw, link) if has_content else None,
        "author": author or source.author or feed_author, "tags": _tags(source.tags, categories),
        "image": _image(raw, link), "published": dated.isoformat() if dated else None,
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    entry = FetchedEntry(entry_id=entry_id, id_hash=hashlib.sha256(entry_id.encode()).hexdigest(),
                         index=index, fields=fields, dated=dated,
                         changed=dates["updated"] or dates["published"], categories=categories,
                         content_hash=digest)
    return entry, notes


def _link(raw: Mapping[str, Any], base: str) -> str:
    """The entry's link, absolute (a relative one resolved against `base`, the feed's URL). The
    link the entry gives (its first) must be http(s): an entry linking `javascript:` or `data:` is
    refused, not sent with a link guessed from elsewhere. Only an entry giving none falls back to
    its id, if that is an http(s) URL itself."""
    given = [c for c in (raw.get("link"), *(lk.get("href") for lk in raw.get("links") or []
                                            if lk.get("rel") in (None, "alternate"))) if c]
    if not given:
        fallback = str(raw.get("id") or "").strip()
        if fallback and is_http_url(fallback) and not _CONTROL.search(fallback) \
                and not _TEMPLATE.search(fallback):
            return fallback
        raise FeedError("no http(s) link to the article")
    declared = str(given[0]).strip()
    url = absolute(declared, base)
    if not is_http_url(url) or _CONTROL.search(url):
        raise FeedError(f"link {_shown(declared)} is not an absolute http(s) URL")
    if _TEMPLATE.search(url):
        raise FeedError(f"link {_shown(declared)} holds template syntax")
    return url


def _shown(text: str, limit: int = 120) -> str:
    """`text` quoted for a one-line message, cut if long (a data: URL can be megabytes)."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


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
    cleaned = sanitize(value, rewrite=lambda url: body_url(url, link)).strip()
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
            if is_http_url(resolved) and not _TEMPLATE.search(resolved):
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


def _dates(raw: Mapping[str, Any]) -> tuple[dict[str, datetime | None], list[str]]:
    """The entry's published and updated dates (UTC), each None when absent or outside 1970-2200
    (year 1 and 9999 are placeholders some systems write; kept, they would overflow date
    arithmetic on every later run), and a note per date dropped."""
    out: dict[str, datetime | None] = {}
    notes: list[str] = []
    for key in ("published", "updated"):
        parsed = dict.get(raw, f"{key}_parsed") if isinstance(raw, dict) else raw.get(f"{key}_parsed")
        out[key] = None                                        # dict.get: no feedparser aliases
        if not parsed:
            continue
        try:
            when: datetime | None = datetime(*parsed[:6], tzinfo=UTC)   # feedparser gives UTC
        except (ValueError, OverflowError):                    # year 0 or 10000 once in UTC
            when = None
        if when is not None and date_in_range(when):
            out[key] = when
            continue
        written = one_line(str((dict.get(raw, key) if isinstance(raw, dict) else raw.get(key)) or ""))
        notes.append(f"{key} date {out_of_range(when) if when else f'{written} is outside 1970-2200'}")
    return out, notes


def entry_slug(source: FeedSource, title: str, entry_id: str) -> str:
    """`<feed name>-<title, cut>-<hash of the entry id>`: fixed when the entry is first seen."""
    words = slugify(title, max_length=50, word_boundary=True)
    short = hashlib.sha256(entry_id.encode()).hexdigest()[:8]
    return "-".join(p for p in (slugify(source.name), words, short) if p)


# -- storing ------------------------------------------------------------------------------------

def _store(conn: Connection, source: FeedSource, entries: list[FetchedEntry],
           baseline_at: datetime | None, now: datetime, *, clean: bool) -> _Counts:
    """Match the fetched entries with the stored ones: update changed ones, classify unseen ones.
    From a feed read only leniently (`clean` false) and not `lenient`, edits are not applied and
    new entries are held; a clean fetch releases the held entries it lists."""
    hold = not clean and not source.lenient
    stored = feed_entries.stored_entries(conn, source.name)
    changed = [e for e in entries if e.id_hash in stored and stored[e.id_hash].content_hash != e.content_hash]
    counts = _Counts()
    if hold and changed:          # a broken document may be a truncated one: keep the stored copy
        counts.warnings.append(f"{_entries_n(len(changed), 'changed')} not updated {_HOLD_HINT}")
        changed = []
    feed_entries.update_changed(conn, source.name, changed, stored, now)
    counts.updated = len(changed)
    unseen = [e for e in entries if e.id_hash not in stored]
    classified = _classify(source, unseen, baseline_at, now, counts)
    if hold:
        classified = [(e, Status.HELD if status == Status.NEW else status) for e, status in classified]
        held = sum(status == Status.HELD for _, status in classified)
        if held:
            counts.warnings.append(f"{_entries_n(held, 'new')} held {_HOLD_HINT}")
    feed_entries.insert_new(conn, source.name, [
        (entry, status, entry_slug(source, entry.fields["title"], entry.entry_id))
        for entry, status in classified], now)
    if not hold:                  # clean again (or `lenient: true` set since): release what waited
        released, forgotten = feed_entries.release_held(conn, source.name, {e.id_hash for e in entries}, now)
        if released or forgotten:
            counts.warnings.append(f"{'the feed parses cleanly again' if clean else '`lenient: true`'}: "
                                   f"{_entries_n(released, 'held')} released, {forgotten} that only a "
                                   "malformed document listed dropped")
    return counts


def _entries_n(count: int, kind: str) -> str:
    return f"{count} {kind} {'entry' if count == 1 else 'entries'}"


def _classify(source: FeedSource, unseen: list[FetchedEntry], baseline_at: datetime | None, now: datetime,
              counts: _Counts) -> list[tuple[FetchedEntry, str]]:
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
