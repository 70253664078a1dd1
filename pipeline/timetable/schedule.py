"""The timetable at work: what each entry sends when it fires, `run --once`, and the daemon.

The ledger, not the scheduler, prevents a double send: an entry that fires twice (a fall-back
hour, a restart) sends each delivery once.

What fires an entry (rendering, the channels, the bounce mailbox, APScheduler's scheduler) is
imported where it is used: `pipeline schedule` and the preview page only plan.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Engine, func
from sqlalchemy import select as sql_select

from pipeline.config import Config, load_config
from pipeline.fields import EARLIEST
from pipeline.intake.posts import LoadResult
from pipeline.intake.sources import load_all, refresh_feeds
from pipeline.models import Edition, Post, Severity, Status
from pipeline.plan import publishable
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger
from pipeline.store.runs import acquire, claim_for_digest, digested, record_run
from pipeline.store.schema import schedule_runs
from pipeline.timetable.entries import Entry, fire_times, last_fire_within

if TYPE_CHECKING:
    from apscheduler.events import JobExecutionEvent
    from apscheduler.schedulers.background import BackgroundScheduler

    from pipeline.publish import ChannelReport

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Upcoming:
    """One timetable entry: when it fires next, and which posts it would send if it fired now."""

    entry: Entry
    fires: tuple[datetime, ...]      # in the entry's time zone
    would_send: tuple[str, ...]      # post slugs


def upcoming(config: Config, *, after: datetime | None = None, count: int = 5,
             now: datetime | None = None) -> list[Upcoming]:
    """Every entry's next `count` fire times after `after` (default: now)."""
    now = now or datetime.now(UTC)
    ready = publishable(load_all(config, now=now).posts, now)
    ledger = Ledger(engine_for(config))
    try:
        return [Upcoming(entry=e, fires=tuple(fire_times(e, config.timezone, after or now, count)),
                         would_send=tuple(_would_send(config, e, ready, ledger, now)))
                for e in config.schedule]
    finally:
        ledger.close()


def _would_send(config: Config, entry: Entry, ready: list[Post], ledger: Ledger,
                now: datetime) -> list[str]:
    if entry.edition != "digest":
        return [p.slug for p in select(entry, ready, ledger)]
    slugs = {s for c in entry.channels for s in digest_candidates(config, entry, c, now, ready)}
    return [p.slug for p in ready if p.slug in slugs]


def digest_candidates(config: Config, entry: Entry, channel: str, fire_time: datetime,
                      ready: list[Post]) -> list[str]:
    """Posts published since the entry's last digest (or in the week before the first one)
    that are in no digest of `channel` yet."""
    engine = engine_for(config)
    taken = digested(engine, channel)
    since = _last_digest(engine, entry.name, fire_time) or fire_time - timedelta(days=7)
    return [p.slug for p in ready if p.slug not in taken and p.sendable_from > since]


def select(entry: Entry, ready: list[Post], ledger: Ledger) -> list[Post]:
    """The posts an entry sends when it fires: `latest`, the newest post, unless it is already on
    every channel of the entry; `queue`, the oldest post not yet on all of them; `digest`, every
    post not yet sent through them (a digest also leaves out posts already in a digest; see
    `digest_candidates`). `ready` holds only publishable posts, oldest first."""
    if entry.edition == "latest":
        return [ready[-1]] if ready and waiting(entry, ready[-1:], ledger) else []
    posts = waiting(entry, ready, ledger)
    return posts[:1] if entry.edition == "queue" else posts


class EditionCounts(Protocol):
    """What `waiting` reads: a Ledger, or the preview page's cached tallies."""

    def edition_counts(self, *, channel: str, edition: str, dry_run: bool = False) -> dict[str, int]: ...


def waiting(entry: Entry, posts: list[Post], ledger: EditionCounts) -> list[Post]:
    """The posts not yet sent on every channel of `entry`, in the given order."""
    return [p for p in posts
            if not all(ledger.edition_counts(channel=c, edition=p.slug).get(Status.SENT, 0)
                       for c in entry.channels)]


# -- firing entries -----------------------------------------------------------------------------

def run_entry(config: Config, entry: Entry, fire_time: datetime, *, now: datetime | None = None,
              dry_run: bool = False, stop: threading.Event | None = None) -> list[ChannelReport]:
    """Do what `entry` does when it fires at `fire_time`. Safe to call twice for one fire (a
    fall-back hour fires twice): the ledger sends each delivery once."""
    from pipeline.preview import render_post
    from pipeline.publish import publish_rendered

    now = now or datetime.now(UTC)
    engine = engine_for(config)
    ready = publishable(load_all(config, now=now).posts, now)
    if entry.edition == "digest":
        return [_digest(config, entry, channel, fire_time, ready, now=now, dry_run=dry_run, stop=stop)
                for channel in entry.channels]
    ledger = Ledger(engine)
    try:
        posts = select(entry, ready, ledger)
    finally:
        ledger.close()
    if not posts:
        log.info("%s: nothing to send", entry.name)
        return []
    rendered = [render_post(p, config) for p in posts]
    return [publish_rendered(config, rendered, channel, dry_run=dry_run, now=now, stop=stop)
            for channel in entry.channels]


def _digest(config: Config, entry: Entry, channel: str, fire_time: datetime, ready: list[Post], *,
            now: datetime, dry_run: bool, stop: threading.Event | None) -> ChannelReport:
    from pipeline.publish import ChannelReport, publish_edition

    engine = engine_for(config)
    key = digest_key(config, entry, fire_time)
    fresh = digest_candidates(config, entry, channel, fire_time, ready)
    members = set(claim_for_digest(engine, channel=channel, digest=key, slugs=fresh))
    posts = [p for p in ready if p.slug in members]
    if not posts and config.digest.empty == "skip":
        log.info("%s: no new articles for %s; digest not sent", entry.name, channel)
        return ChannelReport(channel=channel, editions=[key])
    edition = digest_edition(config, entry, channel, fire_time, posts)
    return publish_edition(config, edition, channel, dry_run=dry_run, now=now, stop=stop)


def digest_key(config: Config, entry: Entry, fire_time: datetime) -> str:
    """The edition key of the digest `entry` sends at `fire_time` (one per local day)."""
    return f"digest-{entry.name}-{fire_time.astimezone(entry.zone(config.timezone)):%Y-%m-%d}"


def digest_edition(config: Config, entry: Entry, channel: str, fire_time: datetime,
                   posts: list[Post]) -> Edition:
    """The digest `entry` sends on `channel` at `fire_time` with `posts` in it: it covers the time
    since the entry's last digest (or the week before its first)."""
    from pipeline.render.digest import render_digest

    local = fire_time.astimezone(entry.zone(config.timezone))
    since = _last_digest(engine_for(config), entry.name, fire_time) or fire_time - timedelta(days=7)
    return render_digest(posts, config, key=digest_key(config, entry, fire_time),
                         start=since.astimezone(local.tzinfo).date(), end=local.date(), channel=channel)


@dataclass(frozen=True, kw_only=True)
class NextDigest:
    """What a digest entry would send on one channel at its next fire, if nothing else came in."""

    entry: Entry
    channel: str
    fire_time: datetime
    posts: tuple[Post, ...]
    edition: Edition | None          # None: no new articles and `digest.empty: skip`


def next_digests(config: Config, *, now: datetime | None = None, local: LoadResult | None = None,
                 render: bool = True) -> list[NextDigest]:
    """Each digest entry's next edition per channel, with the articles it holds so far (posts
    and feed entries ready now; `local`: the posts, if already loaded). Without `render`, only
    the articles (no edition). Nothing is claimed or recorded."""
    now = now or datetime.now(UTC)
    ready = publishable(load_all(config, now=now, local=local).posts, now)
    out = []
    for entry in (e for e in config.schedule if e.edition == "digest"):
        fires = fire_times(entry, config.timezone, now, 1)
        if not fires:
            continue
        for channel in entry.channels:
            members = set(digest_candidates(config, entry, channel, fires[0], ready))
            posts = [p for p in ready if p.slug in members]
            edition = (digest_edition(config, entry, channel, fires[0], posts)
                       if render and (posts or config.digest.empty == "note") else None)
            out.append(NextDigest(entry=entry, channel=channel, fire_time=fires[0], posts=tuple(posts),
                                  edition=edition))
    return out


def _last_digest(engine: Engine, entry: str, before: datetime) -> datetime | None:
    # A stored time before 1970 (a damaged row) is not a last digest: `since` would be year 1,
    # and moving it to the entry's time zone overflows.
    with engine.connect() as conn:
        return conn.execute(sql_select(func.max(schedule_runs.c.fire_time))
                            .where(schedule_runs.c.entry == entry, schedule_runs.c.status == "ran",
                                   schedule_runs.c.fire_time >= EARLIEST,
                                   schedule_runs.c.fire_time < before)).scalar()


def publish_due(config: Config, *, now: datetime | None = None, dry_run: bool = False,
                stop: threading.Event | None = None) -> list[ChannelReport]:
    """Posts whose `publish_at` has come go to their `channels:` (else `default_channels`); the
    ledger skips what already went. Drafts and posts dated in the future are never sent."""
    from pipeline.preview import render_post
    from pipeline.publish import publish_rendered

    now = now or datetime.now(UTC)
    reports: list[ChannelReport] = []
    for post in publishable(load_all(config, now=now).posts, now):
        if post.publish_at is None or post.publish_at > now:
            continue
        channels = list(post.channels) or config.default_channels
        unknown = [c for c in channels if c not in config.channels]
        if unknown or not channels:
            log.warning("%s: publish_at is due but %s", post.path,
                        f"channel {unknown[0]!r} is not configured" if unknown
                        else "it names no channels and default_channels is empty")
            continue
        rendered = [render_post(post, config)]
        reports += [publish_rendered(config, rendered, c, dry_run=dry_run, now=now, stop=stop)
                    for c in channels]
    return [r for r in reports if r.total or r.error]


def run_once(config: Config, *, now: datetime | None = None, dry_run: bool = False
             ) -> dict[str, list[ChannelReport]]:
    """Fire every entry whose latest fire time is within its max_lateness and not yet run, and
    publish posts whose `publish_at` has come (for a system cron or a CI job). Returns the
    reports per entry that ran (`publish_at` under that name)."""
    from pipeline.bounces.reader import read_for_run

    now = now or datetime.now(UTC)
    engine = engine_for(config)
    done: dict[str, list[ChannelReport]] = {}
    refresh_feeds(config, now=now)       # feeds first: planning sees their new entries
    read_for_run(config, dry_run=dry_run)   # bounces too: a bounced address is not mailed again
    _log_unsendable(config, now)
    due = publish_due(config, now=now, dry_run=dry_run)
    if due:
        done["publish_at"] = due
    for entry in config.schedule:
        fire = last_fire_within(entry, config.timezone, now)
        if fire is None or not record_run(engine, entry.name, fire, "ran"):
            continue
        log.info("%s: firing (due %s)", entry.name, fire.isoformat())
        done[entry.name] = run_entry(config, entry, fire, now=now, dry_run=dry_run)
    return done


def _log_unsendable(config: Config, now: datetime) -> None:
    """Log each post that cannot be read (a bad date, a bad URL, ...): the run sends the others,
    and a cron job's log says why one was left out."""
    for problem in load_all(config, now=now).problems:
        if problem.severity is Severity.ERROR:
            log.warning("%s (not sent)", problem)


# -- the daemon ---------------------------------------------------------------------------------

_daemon_stop = threading.Event()


def fire(config_path: str, name: str) -> None:
    """The job APScheduler runs (a module-level function, so its job store can keep it)."""
    from pipeline.bounces.reader import read_for_run

    config = load_config(config_path)
    entry = next((e for e in config.schedule if e.name == name), None)
    if entry is None:
        log.warning("%s: no longer in the timetable; skipped", name)
        return
    # Recorded under the time it was due (not now), so `run --once` and a restarted daemon see
    # the same run and do not fire it again.
    fire_time = last_fire_within(entry, config.timezone, datetime.now(UTC)) or datetime.now(UTC)
    if not record_run(engine_for(config), name, fire_time, "ran"):
        log.info("%s: the run due %s already ran", name, fire_time.isoformat())
        return
    refresh_feeds(config)                # feeds first: planning sees their new entries
    read_for_run(config)                 # bounces too: a bounced address is not mailed again
    _log_unsendable(config, datetime.now(UTC))
    for report in run_entry(config, entry, fire_time, stop=_daemon_stop):
        log.info("%s -> %s: %d sent, %d failed, %d already sent%s", name, report.channel, report.sent,
                 report.failed, report.already_sent, f" ({report.error})" if report.error else "")


def run_daemon(config: Config, *, started: Callable[[], None] | None = None) -> None:
    """`pipeline run`: the timetable in the foreground until SIGINT/SIGTERM. Jobs live in the
    state database, so runs missed while the daemon was down are run on restart when within
    `max_lateness` (once, coalesced) and otherwise reported as missed."""
    from apscheduler.events import EVENT_JOB_MISSED
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    engine = engine_for(config)
    lock = acquire(engine)
    scheduler = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(engine=engine)},
                                  timezone=config.timezone)
    scheduler.add_jobstore(MemoryJobStore(), "memory")
    scheduler.add_listener(lambda event: _missed(engine, event), EVENT_JOB_MISSED)

    def shutdown(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the send in progress, then stopping", signum)
        _daemon_stop.set()
        threading.Thread(target=scheduler.shutdown, kwargs={"wait": True}, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        scheduler.start(paused=True)
        _sync_jobs(scheduler, config)
        scheduler.add_job(lock.refresh, "interval", seconds=30, id="lock", jobstore="memory")
        scheduler.add_job(publish_due, "interval", seconds=60, id="publish_at", jobstore="memory",
                          kwargs={"config": config, "stop": _daemon_stop}, next_run_time=datetime.now(UTC))
        scheduler.resume()
        if started:
            started()
        while scheduler.running:
            time.sleep(0.2)
    finally:
        lock.release()


def _sync_jobs(scheduler: BackgroundScheduler, config: Config) -> None:
    """One job per entry. A job whose trigger is unchanged is kept as stored, so its missed runs
    are still detected; changed, new and removed entries are updated."""
    wanted = {e.name: e for e in config.schedule}
    for job in scheduler.get_jobs(jobstore="default"):
        if job.id not in wanted:
            job.remove()
    for name, entry in wanted.items():
        trigger = entry.trigger(config.timezone)
        job = scheduler.get_job(name, jobstore="default")
        grace = max(1, int(entry.lateness.total_seconds()))
        if job is not None and str(job.trigger) == str(trigger) and job.misfire_grace_time == grace:
            continue
        scheduler.add_job(fire, trigger, args=[config.source, name], id=name, name=name,
                          jobstore="default", replace_existing=True, coalesce=True,
                          misfire_grace_time=grace, max_instances=1)


def _missed(engine: Engine, event: JobExecutionEvent) -> None:
    log.warning("%s: the run due %s was missed by more than max_lateness; skipped", event.job_id,
                event.scheduled_run_time.isoformat())
    record_run(engine, event.job_id, event.scheduled_run_time, "missed",
               "missed by more than max_lateness (the scheduler was not running)")
