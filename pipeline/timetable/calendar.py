"""The plan as a calendar: every send in a window of time, per channel, for the preview page's
`/calendar`, its `/calendar.ics` and `pipeline schedule --ics`.

Coming sends come from the same plan as `pipeline schedule` and the preview's post states: each
timetable entry's fire times (`fire_times`), what the next fires carry (a queue's waiting posts
one per fire, the newest post for `latest`, a digest's candidates), and posts' `publish_at`.
Past sends come from the ledger, one grouped pass over it (`sent_editions`) whatever the number
of editions: the same pass says which posts are already out, so the plan asks nothing more of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import Engine, func, select

from pipeline.config import Config
from pipeline.models import Post, Status
from pipeline.plan import key_prefix, publishable
from pipeline.store.schema import deliveries
from pipeline.timetable.entries import Entry, fire_times
from pipeline.timetable.schedule import digest_candidates, waiting

# An entry firing every minute would fill a quarter's calendar with 130,000 events: each entry
# lists at most this many fires in a window (the page and the feed say when some were left out).
MAX_FIRES = 2000
_BATCH = 200


@dataclass(frozen=True, kw_only=True)
class SentEdition:
    """One edition on one channel as the ledger has it: how many deliveries were sent, and when
    the first and the last went."""

    channel: str
    edition: str
    sent: int
    first: datetime
    last: datetime


class SentCounts:
    """Sent deliveries per (channel, edition), answering `edition_counts` as a `Ledger` does (the
    timetable's `waiting` asks it which posts are out)."""

    def __init__(self, editions: Sequence[SentEdition]) -> None:
        self.editions = tuple(editions)
        self._sent = {(e.channel, e.edition): e.sent for e in editions}

    def edition_counts(self, *, channel: str, edition: str, dry_run: bool = False) -> dict[str, int]:
        """Status -> count; only `sent` is known (dry runs are never counted)."""
        sent = 0 if dry_run else self._sent.get((channel, edition), 0)
        return {Status.SENT: sent} if sent else {}


def sent_editions(engine: Engine) -> SentCounts:
    """Every (channel, edition) with sent deliveries (dry runs left out): one grouped statement,
    whatever the number of editions (a statement per edition would each walk its key range)."""
    d = deliveries.c
    query = (select(d.channel, d.edition, func.count().label("n"), func.min(d.sent_at).label("first"),
                    func.max(d.sent_at).label("last"))
             .where(d.status == Status.SENT, d.dry_run.is_(False), d.sent_at.is_not(None))
             .group_by(d.channel, d.edition).order_by(d.channel, d.edition))
    with engine.connect() as conn:
        return SentCounts([SentEdition(channel=r.channel, edition=r.edition, sent=r.n, first=r.first,
                                       last=r.last) for r in conn.execute(query)])


@dataclass(frozen=True, kw_only=True)
class Send:
    """One send on one channel: planned (`sent` 0) or done (from the ledger)."""

    uid: str                      # stable: the same send has the same UID in every download
    channel: str
    at: datetime                  # UTC; for a past send, when its first delivery went
    kind: str                     # publish_at | latest | queue | digest | sent
    source: str                   # "publish_at", the timetable entry's name, or "ledger"
    slugs: tuple[str, ...] = ()   # the posts it carries, as far as known now
    edition: str | None = None    # the ledger's edition (a post's slug, a digest's key), if known
    sent: int = 0                 # past: deliveries sent
    last: datetime | None = None  # past: when the last one went
    turn: int | None = None       # a timetable send: which coming fire it is (0: the next), if known


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The sends between `start` and `end`, in time order, and which entries listed no more
    than MAX_FIRES of their fires."""

    start: datetime
    end: datetime
    now: datetime
    sends: tuple[Send, ...]
    cut: tuple[str, ...] = ()


def uid_host(config: Config) -> str:
    """The UIDs' domain part: the site's host name."""
    return urlsplit(config.site.url).hostname or "pipeline.invalid"


def build_plan(config: Config, posts: Sequence[Post], sent: SentCounts, *, start: datetime,
               end: datetime, now: datetime) -> Plan:
    """Every send from `start` to `end` (aware date-times): those done, from `sent`, and those
    planned after `now`: `publish_at`, and each timetable entry's fires on each of its channels,
    with the posts each would carry if nothing else came in. A post is planned once per channel,
    at its earliest send."""
    host = uid_host(config)
    slugs = {p.slug for p in posts}
    done = [_done(e, host, e.edition in slugs) for e in sent.editions if e.first < end and e.last >= start]
    ready = [p for p in publishable(posts, now) if p.available_at is None or p.available_at <= now]
    planned: list[Send] = []
    cut: list[str] = []
    if end > now:
        planned += _publish_at(config, posts, sent, host, start=start, end=end, now=now)
        for entry in config.schedule:
            fires, whole = _fires(entry, config.timezone, now, start, end)
            if not whole:
                cut.append(entry.name)
            planned += _entry_sends(config, entry, fires, ready, sent, host, now)
    seen: set[tuple[str, str]] = set()
    kept: list[Send] = []
    for send in sorted(planned, key=lambda s: (s.at, s.channel, s.source)):
        if send.kind == "digest":      # a digest carries its articles whether or not they went alone
            kept.append(send)
            continue
        slugs = tuple(s for s in send.slugs if (send.channel, s) not in seen)
        seen.update((send.channel, s) for s in slugs)
        if send.kind == "publish_at" and not slugs:
            continue                  # a timetable entry sends it earlier
        kept.append(send if slugs == send.slugs else
                    Send(uid=send.uid, channel=send.channel, at=send.at, kind=send.kind,
                         source=send.source, slugs=slugs, edition=send.edition if slugs else None,
                         turn=send.turn))
    sends = sorted(done + [s for s in kept if s.at >= start], key=lambda s: (s.at, s.channel, s.source))
    return Plan(start=start, end=end, now=now, sends=tuple(sends), cut=tuple(cut))


def _done(edition: SentEdition, host: str, is_post: bool) -> Send:
    prefix = key_prefix(edition.channel, edition.edition, dry_run=False)
    return Send(uid=f"sent:{prefix}@{host}", channel=edition.channel, at=_utc(edition.first), kind="sent",
                source="ledger", slugs=(edition.edition,) if is_post else (), edition=edition.edition,
                sent=edition.sent, last=_utc(edition.last))


def _publish_at(config: Config, posts: Sequence[Post], sent: SentCounts, host: str, *,
                start: datetime, end: datetime, now: datetime) -> list[Send]:
    """`publish_at` sends: when it has come and the post is publishable (dated, settled), on
    the post's `channels:` (else `default_channels`) that have not sent it."""
    out = []
    for post in posts:
        if post.draft or post.publish_at is None:
            continue
        at = max(post.publish_at, post.sendable_from, now)
        if not start <= at < end:
            continue
        for channel in post.channels or config.default_channels:
            if channel in config.channels and not sent.edition_counts(channel=channel, edition=post.slug):
                out.append(Send(uid=f"publish_at:{key_prefix(channel, post.slug, dry_run=False)}@{host}",
                                channel=channel, at=_utc(at), kind="publish_at", source="publish_at",
                                slugs=(post.slug,), edition=post.slug))
    return out


def _fires(entry: Entry, zone: str, now: datetime, start: datetime, end: datetime
           ) -> tuple[list[datetime], bool]:
    """The entry's fires from `start` (or `now`, if later) to `end`, at most MAX_FIRES; and
    whether all of them are there."""
    fires: list[datetime] = []
    after = max(now, start - timedelta(microseconds=1))
    while len(fires) < MAX_FIRES:
        batch = fire_times(entry, zone, after, min(_BATCH, MAX_FIRES - len(fires)))
        fires += [f for f in batch if f < end]
        if not batch or batch[-1] >= end:
            return fires, True
        after = batch[-1]
    more = fire_times(entry, zone, fires[-1], 1)
    return fires, not more or more[0] >= end


def _entry_sends(config: Config, entry: Entry, fires: list[datetime], ready: list[Post],
                 sent: SentCounts, host: str, now: datetime) -> list[Send]:
    """One send per fire and channel, with the posts it carries as far as known now: a queue
    its waiting posts, one per fire counted from the next fire after `now`; `latest` the newest
    post at the next fire (its fires that carry nothing are left out); a digest its candidates
    at the next fire. Later fires carry what comes in meanwhile."""
    queue = [p.slug for p in waiting(entry, ready, sent)] if entry.edition != "digest" else []
    # The fires that carry something known: the next one (latest, digest), or one per waiting post.
    turns = {f.astimezone(UTC): i for i, f in enumerate(
        fire_times(entry, config.timezone, now, len(queue) if entry.edition == "queue" else 1))}
    out = []
    for channel in entry.channels:
        if entry.edition == "digest":
            first = [f for f, i in turns.items() if i == 0]
            carried = [tuple(digest_candidates(config, entry, channel, first[0], ready))] if first else []
        elif entry.edition == "latest":
            carried = [(ready[-1].slug,)] if ready and ready[-1].slug in queue else []
        else:
            carried = [(s,) for s in queue]
        for fire in fires:
            at = _utc(fire)
            turn = turns.get(at)
            slugs = carried[turn] if turn is not None and turn < len(carried) else ()
            if entry.edition == "latest" and not slugs:
                continue          # sends nothing as things stand: an hourly entry would fill the calendar
            edition = (_digest_key(entry, fire) if entry.edition == "digest"
                       else slugs[0] if slugs else None)
            out.append(Send(uid=f"{entry.name}:{channel}:{at:%Y%m%dT%H%M%SZ}@{host}", channel=channel,
                            at=at, kind=entry.edition, source=entry.name, slugs=slugs, edition=edition,
                            turn=turn))
    return out


def _digest_key(entry: Entry, fire: datetime) -> str:
    # As `schedule.digest_key`, from the fire time already in the entry's zone.
    return f"digest-{entry.name}-{fire:%Y-%m-%d}"


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
