"""The timetable at work: what each entry sends when it fires, `run --once`, and the daemon.

The ledger, not the scheduler, prevents a double send: an entry that fires twice (a fall-back
hour, a restart) sends each delivery once.

What fires an entry (rendering, the channels, the bounce mailbox, APScheduler's scheduler) is
imported where it is used: `pipeline schedule` and the preview page only plan.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from pipeline.config import Config, load_config
from pipeline.errors import PipelineError
from pipeline.intake.posts import LoadResult
from pipeline.intake.sources import load_all, refresh_feeds
from pipeline.models import Edition, Post, Severity, Status
from pipeline.plan import publishable
from pipeline.store.engine import engine_for, where
from pipeline.store.ledger import Ledger
from pipeline.store.runs import (
    Lock,
    SchedulerLost,
    acquire,
    claim_for_digest,
    close_session,
    lock_session,
    ran,
    record_run,
    scheduler_roster,
    standing_by,
    stop_standing_by,
    try_lead,
)
from pipeline.timetable.digests import digest_candidates, digest_edition, digest_key
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
    return publish_edition(config, edition, channel, dry_run=dry_run, now=now, stop=stop,
                           digest=(entry.name, fire_time))


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
POLL = 5.0            # seconds between a standby's tries of the lock, and the active one's checks of it
HEARTBEAT = 30.0      # seconds between the heartbeats `pipeline status` and the metrics read


def fire(config_path: str, name: str, added: str | None = None, due: str | None = None) -> None:
    """The job APScheduler runs (a module-level function, so its job store can keep it). `added`:
    when the job was stored (read by a takeover's catch-up, see `_catch_up`); `due`: the fire
    time to run, when not the latest one."""
    from pipeline.bounces.reader import read_for_run

    config = load_config(config_path)
    entry = next((e for e in config.schedule if e.name == name), None)
    if entry is None:
        log.warning("%s: no longer in the timetable; skipped", name)
        return
    # Recorded under the time it was due (not now), so `run --once` and a restarted daemon see
    # the same run and do not fire it again; recorded before anything is sent, so a scheduler
    # taking over from this one does not fire it again either.
    fire_time = (datetime.fromisoformat(due) if due else
                 last_fire_within(entry, config.timezone, datetime.now(UTC)) or datetime.now(UTC))
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
    state database, so runs missed while no scheduler was running are run when one starts, if
    within `max_lateness` (once, coalesced), and otherwise reported as missed.

    On SQLite one scheduler runs per database (a second raises SchedulerRunning). On PostgreSQL
    a second one stands by until the active one's advisory lock is freed, then takes over; an
    active one whose lock connection is cut stops firing and raises SchedulerLost."""
    engine = engine_for(config)
    schedulers: list[BackgroundScheduler] = []

    def shutdown(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the send in progress, then stopping", signum)
        _daemon_stop.set()
        for scheduler in schedulers:
            threading.Thread(target=_shut_down, args=(scheduler,), daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    lock = acquire(engine) if engine.dialect.name != "postgresql" else _wait_to_lead(engine)
    if lock is None:
        return           # stopped while standing by
    lost = False
    try:
        scheduler = _scheduler(config, engine, lock)
        schedulers.append(scheduler)
        if _daemon_stop.is_set():        # a signal while it was being made
            _shut_down(scheduler)
            return
        scheduler.resume()
        if started:
            started()
        lost = not _watch(scheduler, lock)
    finally:
        if lost:
            # The database may be out of reach too: nothing more to tidy up than can be.
            with contextlib.suppress(PipelineError, SQLAlchemyError):
                lock.release()
        else:
            lock.release()
    if lost:
        raise SchedulerLost(f"this scheduler lost its lock on the state database {where(engine)} (the "
                            "connection holding it was closed); it stopped firing so that another "
                            "takes over: start it again to stand by")


def _scheduler(config: Config, engine: Engine, lock: Lock) -> BackgroundScheduler:
    """The APScheduler scheduler of the active process: started paused, its jobs in step with the
    timetable, the runs a dying predecessor dropped queued."""
    from apscheduler.events import EVENT_JOB_MISSED
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(engine=engine)},
                                    timezone=config.timezone)
    scheduler.add_jobstore(MemoryJobStore(), "memory")
    scheduler.add_listener(lambda event: _missed(engine, event), EVENT_JOB_MISSED)
    scheduler.start(paused=True)
    _catch_up(scheduler, config, engine, datetime.now(UTC))
    _sync_jobs(scheduler, config)
    scheduler.add_job(lock.refresh, "interval", seconds=HEARTBEAT, id="lock", jobstore="memory")
    scheduler.add_job(publish_due, "interval", seconds=60, id="publish_at", jobstore="memory",
                      kwargs={"config": config, "stop": _daemon_stop}, next_run_time=datetime.now(UTC))
    return scheduler


def _shut_down(scheduler: BackgroundScheduler) -> None:
    from apscheduler.schedulers import SchedulerNotRunningError

    with contextlib.suppress(SchedulerNotRunningError):     # a signal before it started
        scheduler.shutdown(wait=True)


def _poll() -> float:
    # PIPELINE_STANDBY_POLL (seconds; not documented for users): the tests' shorter takeovers.
    try:
        return max(0.1, float(os.environ.get("PIPELINE_STANDBY_POLL", POLL)))
    except ValueError:
        return POLL


def _watch(scheduler: BackgroundScheduler, lock: Lock) -> bool:
    """Wait while the scheduler runs; False (the scheduler stopped) as soon as the lock is lost."""
    from apscheduler.schedulers import SchedulerNotRunningError

    poll = _poll()
    check = time.monotonic() + poll
    while scheduler.running:
        time.sleep(0.2)
        if time.monotonic() < check:
            continue
        check = time.monotonic() + poll
        if not lock.held():
            log.error("the connection holding the scheduler lock was closed: stopping; what is being "
                      "sent stops after the current message")
            _daemon_stop.set()
            with contextlib.suppress(SchedulerNotRunningError):     # a signal stopped it meanwhile
                scheduler.pause()       # no new fire from here on
            _shut_down(scheduler)
            return False
    return True


def _wait_to_lead(engine: Engine) -> Lock | None:
    """PostgreSQL: stand by until this process holds the scheduler lock (None: stopped by a
    signal first). Says once which scheduler is active, each time that changes."""
    poll, me = _poll(), f"{socket.gethostname()}:{os.getpid()}"
    session: Connection | None = None
    shown: str | None = None
    beat = 0.0
    lock: Lock | None = None
    try:
        while not _daemon_stop.is_set():
            try:
                session = session or lock_session(engine)
                lock = try_lead(engine, session)
                if lock is not None:
                    log.info("active: %s holds the scheduler lock%s", me,
                             f" (taking over from {shown})" if shown else "")
                    return lock
                if time.monotonic() >= beat:
                    standing_by(engine)
                    beat = time.monotonic() + HEARTBEAT
                active, _ = scheduler_roster(engine)
                who = f"{active.host}:{active.pid}" if active else "another scheduler"
                if who != shown:
                    log.info("standby: %s is active", who)
                    shown = who
            except (PipelineError, SQLAlchemyError) as exc:
                log.warning("standby: the state database cannot be reached (%s); trying again", exc)
                if session is not None:
                    close_session(session)
                    session = None
            _daemon_stop.wait(poll)
        return None
    finally:
        if lock is None:
            if session is not None:
                close_session(session)
            if shown is not None:
                with contextlib.suppress(PipelineError, SQLAlchemyError):
                    stop_standing_by(engine)


def _catch_up(scheduler: BackgroundScheduler, config: Config, engine: Engine, now: datetime) -> None:
    """Queue each run the previous active scheduler took from its job store but never recorded:
    it died in the instant between the two, and the stored job has already moved on to its next
    fire time, so APScheduler would not run it again. A job stored with `added` (when it was)
    and an unchanged trigger has taken the latest fire time within max_lateness exactly when
    that fire time is after `added` and before the job's next run time."""
    for entry in config.schedule:
        job = scheduler.get_job(entry.name, jobstore="default")
        if job is None or job.next_run_time is None or not job.kwargs.get("added") \
                or str(job.trigger) != str(entry.trigger(config.timezone)):
            continue
        due = last_fire_within(entry, config.timezone, now)
        if due is None or due < datetime.fromisoformat(job.kwargs["added"]) or due >= job.next_run_time \
                or ran(engine, entry.name, due):
            continue
        log.warning("%s: the run due %s was taken by the previous scheduler but not recorded; running "
                    "it now", entry.name, due.isoformat())
        scheduler.add_job(fire, "date", run_date=now, args=[config.source, entry.name],
                          kwargs={"due": due.isoformat()}, id=f"catch-up-{entry.name}", jobstore="memory",
                          misfire_grace_time=None)


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
            if not job.kwargs.get("added"):
                # Stored by an older version: from now on, `_catch_up` can read it.
                job.modify(kwargs={"added": datetime.now(UTC).isoformat()})
            continue
        scheduler.add_job(fire, trigger, args=[config.source, name], id=name, name=name,
                          kwargs={"added": datetime.now(UTC).isoformat()},
                          jobstore="default", replace_existing=True, coalesce=True,
                          misfire_grace_time=grace, max_instances=1)


def _missed(engine: Engine, event: JobExecutionEvent) -> None:
    log.warning("%s: the run due %s was missed by more than max_lateness; skipped", event.job_id,
                event.scheduled_run_time.isoformat())
    record_run(engine, event.job_id, event.scheduled_run_time, "missed",
               "missed by more than max_lateness (the scheduler was not running)")
