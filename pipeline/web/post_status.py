"""Where each post stands on each channel: sent (from the ledger), scheduled (from `publish_at`
and the timetable), or not scheduled. Read-only: nothing here sends or records anything.

The ledger is read once per edition and channel, and a long-running page (the preview) keeps
what it read until the state database changes (`LedgerCache`): an edition of a million rows
costs one pass after each change, not several on every request.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from pipeline.config import Config
from pipeline.models import Post, Status
from pipeline.plan import publishable
from pipeline.store.changes import ChangeMark
from pipeline.store.engine import engine_for
from pipeline.store.ledger import EditionTally, edition_tally
from pipeline.store.runs import digest_of
from pipeline.timetable.entries import fire_times
from pipeline.timetable.schedule import digest_candidates, waiting


@dataclass(frozen=True, kw_only=True)
class ChannelState:
    """One post on one channel. `state`: sent, sending, failed, unknown, pending, in digest,
    scheduled, not scheduled, draft, future or settling (a feed entry); `detail` says how many,
    when, or by which timetable entry."""

    channel: str
    state: str
    detail: str = ""
    at: datetime | None = None


MAX_TURNS = 50      # a queue is looked ahead this many slots; a post further back is "not scheduled"

# (entry name, channel) -> slug -> which coming fire sends it (0: the next), with those fires.
Turns = dict[tuple[str, str], tuple[dict[str, int], list[datetime]]]


class Tallies:
    """The ledger's word on editions, each (channel, edition) read once in one pass and then
    remembered. It answers `edition_counts` and `last_sent` as a `Ledger` does, so the
    timetable's `waiting` asks it too. Thread-safe."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str, bool], EditionTally] = {}

    def tally(self, *, channel: str, edition: str, dry_run: bool = False) -> EditionTally:
        """Counts per status and the latest send time of `edition` on `channel`."""
        key = (channel, edition, dry_run)
        # Held while reading: a second request for the same edition waits for the first's pass.
        with self._lock:
            if key not in self._known:
                self._known[key] = edition_tally(self.engine, channel=channel, edition=edition,
                                                 dry_run=dry_run)
            return self._known[key]

    def edition_counts(self, *, channel: str, edition: str, dry_run: bool = False) -> dict[str, int]:
        """Status -> count, as `Ledger.edition_counts`."""
        return self.tally(channel=channel, edition=edition, dry_run=dry_run).counts

    def last_sent(self, *, channel: str, edition: str, dry_run: bool = False) -> datetime | None:
        """When the latest delivery was sent, as `Ledger.last_sent`."""
        return self.tally(channel=channel, edition=edition, dry_run=dry_run).last_sent


class LedgerCache:
    """`Tallies` kept while the state database is unchanged, for a page that answers many
    requests. Thread-safe; `close()` lets go of the connection it keeps.

    The database has changed when its change mark (`store/changes.py`: SQLite's data_version,
    PostgreSQL's current snapshot) has moved, which costs the same at a million rows as at none.
    Other databases have no such cheap signal: there, tallies last one request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mark: ChangeMark | None = None
        self._tallies: Tallies | None = None
        self._version: int | str | None = None

    def tallies(self, engine: Engine) -> Tallies:
        """Tallies for `engine`'s database as it is now: the kept ones if nothing was committed
        since they were made (the version is read before any tally, so a commit during the
        reads makes the next call read again)."""
        with self._lock:
            if self._mark is None or self._mark.engine is not engine:
                self._drop_mark()
                self._mark = ChangeMark(engine)
            version = self._mark.read()
            tallies = self._tallies
            if tallies is None or tallies.engine is not engine or version is None or version != self._version:
                tallies = Tallies(engine)
                self._tallies, self._version = tallies, version
            return tallies

    def close(self) -> None:
        """Close the kept connection (the next `tallies` opens another)."""
        with self._lock:
            self._drop_mark()

    def _drop_mark(self) -> None:
        if self._mark is not None:
            self._mark.close()
        self._mark, self._version = None, None


def post_states(config: Config, posts: Sequence[Post], *, now: datetime | None = None,
                only: Sequence[str] | None = None,
                cache: LedgerCache | None = None) -> dict[str, list[ChannelState]]:
    """Slug -> the post's state on every configured channel, in config order. `posts` are all
    the posts (a queue's order depends on them); `only`: the slugs wanted (default: all).
    `cache`: keeps what was read from the ledger until the database changes."""
    now = now or datetime.now(UTC)
    engine = engine_for(config)
    ready = [p for p in publishable(posts, now) if not _settling(p, now)]
    tallies = cache.tallies(engine) if cache is not None else Tallies(engine)
    digests = {c: digest_of(engine, c) for c in config.channels}
    turns = _turns(config, ready, tallies, now)
    zone = ZoneInfo(config.timezone)
    return {p.slug: [_local(_state(config, p, c, turns, tallies, digests[c], now), zone)
                     for c in config.channels]
            for p in posts if only is None or p.slug in only}


def _turns(config: Config, ready: list[Post], tallies: Tallies, now: datetime) -> Turns:
    """For every timetable entry and channel: which of its coming fires sends which post, worked
    out once for all posts (the ledger is asked once per post and entry, not once per pair)."""
    out: Turns = {}
    for entry in config.schedule:
        waiting_slugs = [p.slug for p in waiting(entry, ready, tallies)] if entry.edition != "digest" else []
        for channel in entry.channels:
            if entry.edition == "digest":
                order = {s: 0 for s in digest_candidates(config, entry, channel, now, ready)}
            elif entry.edition == "latest":
                order = {ready[-1].slug: 0} if ready and ready[-1].slug in waiting_slugs else {}
            else:
                order = {s: i for i, s in enumerate(waiting_slugs[:MAX_TURNS])}
            count = max(order.values(), default=-1) + 1
            fires = fire_times(entry, config.timezone, now, count) if count else []
            out[(entry.name, channel)] = (order, fires)
    return out


def _settling(post: Post, now: datetime) -> bool:
    """A feed entry not yet quiet for its feed's `settle` time."""
    return post.available_at is not None and post.available_at > now


def _local(state: ChannelState, zone: ZoneInfo) -> ChannelState:
    """Times shown in the site's time zone."""
    return replace(state, at=state.at.astimezone(zone)) if state.at else state


def _state(config: Config, post: Post, channel: str, turns: Turns, tallies: Tallies,
           digests: dict[str, str], now: datetime) -> ChannelState:
    recorded = _recorded(tallies, channel, post.slug)
    if recorded is None and post.slug in digests:
        recorded = (_recorded(tallies, channel, digests[post.slug], via=f"in {digests[post.slug]}")
                    or ChannelState(channel=channel, state="in digest",
                                    detail=f"{digests[post.slug]}, which had no recipients"))
    if recorded is not None:
        return recorded
    if post.draft:
        return ChannelState(channel=channel, state="draft", detail="a draft is never sent")
    if post.date > now:
        return ChannelState(channel=channel, state="future", detail="not before its date", at=post.date)
    if _settling(post, now):
        return ChannelState(channel=channel, state="settling", at=post.available_at,
                            detail="a feed entry whose content changed lately; sendable from then")
    return (_scheduled(config, post, channel, turns, now)
            or ChannelState(channel=channel, state="not scheduled"))


def _recorded(tallies: Tallies, channel: str, edition: str, via: str = "") -> ChannelState | None:
    """The ledger's word on `edition` (a post, or the digest that carries it) on `channel`."""
    tally = tallies.tally(channel=channel, edition=edition)
    counts = tally.counts
    total = sum(counts.values())
    if not total:
        return None
    sent = counts.get(Status.SENT, 0)
    detail = f"{sent} of {total}" + (f" {via}" if via else "")
    for status in (Status.SENDING, Status.PENDING, Status.UNKNOWN, Status.FAILED):
        if counts.get(status):
            detail += f", {counts[status]} {status.value}"
    state = next((s.value for s in (Status.FAILED, Status.UNKNOWN, Status.SENDING, Status.PENDING)
                  if counts.get(s)), Status.SENT.value)
    return ChannelState(channel=channel, state=state, detail=detail, at=tally.last_sent)


def _scheduled(config: Config, post: Post, channel: str, turns: Turns, now: datetime) -> ChannelState | None:
    """The earliest moment `publish_at` or a timetable entry sends the post on `channel`."""
    options: list[tuple[datetime, str]] = []
    if post.publish_at is not None and channel in (post.channels or config.default_channels):
        options.append((max(post.publish_at, now), "publish_at"))
    for entry in config.schedule:
        order, fires = turns.get((entry.name, channel), ({}, []))
        turn = order.get(post.slug)
        if turn is not None and turn < len(fires):
            options.append((fires[turn], entry.name))
    if not options:
        return None
    at, why = min(options)
    return ChannelState(channel=channel, state="scheduled", detail=why, at=at)
