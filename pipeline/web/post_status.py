"""Where each post stands on each channel: sent (from the ledger), scheduled (from `publish_at`
and the timetable), or not scheduled. Read-only: nothing here sends or records anything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from pipeline.config import Config
from pipeline.models import Post, Status
from pipeline.plan import publishable
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger
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


def post_states(config: Config, posts: Sequence[Post], *, now: datetime | None = None,
                only: Sequence[str] | None = None) -> dict[str, list[ChannelState]]:
    """Slug -> the post's state on every configured channel, in config order. `posts` are all
    the posts (a queue's order depends on them); `only`: the slugs wanted (default: all)."""
    now = now or datetime.now(UTC)
    engine = engine_for(config)
    ready = [p for p in publishable(posts, now) if not _settling(p, now)]
    ledger = Ledger(engine)
    try:
        digests = {c: digest_of(engine, c) for c in config.channels}
        turns = _turns(config, ready, ledger, now)
        zone = ZoneInfo(config.timezone)
        return {p.slug: [_local(_state(config, p, c, turns, ledger, digests[c], now), zone)
                         for c in config.channels]
                for p in posts if only is None or p.slug in only}
    finally:
        ledger.close()


def _turns(config: Config, ready: list[Post], ledger: Ledger, now: datetime) -> Turns:
    """For every timetable entry and channel: which of its coming fires sends which post, worked
    out once for all posts (the ledger is asked once per post and entry, not once per pair)."""
    out: Turns = {}
    for entry in config.schedule:
        waiting_slugs = [p.slug for p in waiting(entry, ready, ledger)] if entry.edition != "digest" else []
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


def _state(config: Config, post: Post, channel: str, turns: Turns, ledger: Ledger,
           digests: dict[str, str], now: datetime) -> ChannelState:
    recorded = _recorded(ledger, channel, post.slug)
    if recorded is None and post.slug in digests:
        recorded = (_recorded(ledger, channel, digests[post.slug], via=f"in {digests[post.slug]}")
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


def _recorded(ledger: Ledger, channel: str, edition: str, via: str = "") -> ChannelState | None:
    """The ledger's word on `edition` (a post, or the digest that carries it) on `channel`."""
    counts = ledger.edition_counts(channel=channel, edition=edition)
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
    return ChannelState(channel=channel, state=state, detail=detail,
                        at=ledger.last_sent(channel=channel, edition=edition))


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
