"""The delivery task (`pipeline.deliver`): one job sends its ledger keys through the same code as
an inline publish (`publish._emails`, `_send_all`: the SMTP pump, `_deliver`), with the same
ledger rules: intent before, result after, a `sent` key never sent again.

A job that runs twice is harmless: keys no longer pending are skipped. Keys an earlier attempt of
the job left `sending` (its worker died) are resolved first by the channel's crash rule, those
keys only. A worker process keeps what jobs share between them: each edition rendered once, and
the channels it built (an SMTP channel's connections and worker processes), one per job running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from procrastinate import RetryStrategy
from sqlalchemy import bindparam, or_, select

from pipeline.channels.base import Channel
from pipeline.channels.registry import build_channel
from pipeline.config import Config
from pipeline.errors import PipelineError, StateError
from pipeline.models import Delivery, Edition, Post, Rendered, Snippet, Status
from pipeline.publish import (
    ChannelReport,
    _emails,
    _networks,
    _numbered_parts,
    _send_all,
    social_deliveries,
)
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger
from pipeline.store.schema import deliveries, subscribers
from pipeline.store.subscribers import SubscriberStatus
from pipeline.workers.app import QUEUE, TASK
from pipeline.workers.keys import recover_keys
from pipeline.workers.shared_limits import shared

if TYPE_CHECKING:
    import procrastinate

    from pipeline.channels.pump import Email
    from pipeline.store.throttle import SharedRate

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """The worker is stopping: the job's keys not sent yet go back to the queue (retried)."""


class ChannelStopped(PipelineError):
    """The channel stopped (unreachable, login refused): the job is retried later; its keys
    went back to pending."""


class ThreadWaiting(Exception):
    """A thread's part waits for its previous part, sent by another job: this one runs again soon."""


class UnknownEdition(PipelineError):
    """A job names an edition that is no post (any more)."""


# A job that failed because the database went away, the channel stopped or the worker is
# stopping runs again (on any worker) after a short wait; any other error fails it, and its
# pending keys wait for the next planner run.
RETRY = RetryStrategy(max_attempts=60, wait=1,
                      retry_exceptions={StateError, ChannelStopped, Interrupted, ThreadWaiting})


class Deliverer:
    """What one worker process keeps between jobs: the config, the posts it rendered (per
    channel), the channels it built. Thread-safe: procrastinate runs several jobs at once."""

    def __init__(self, config: Config, stop: threading.Event) -> None:
        """`stop`: set when the worker stops; a job then finishes the messages in flight only."""
        self.config, self.stop = config, stop
        self._lock = threading.Lock()
        self._render = threading.Lock()
        self._posts: dict[str, Post] = {}
        self._emails: dict[tuple[str, str], Edition] = {}
        self._rendered: dict[str, Rendered] = {}
        self._parts: dict[tuple[str, str], dict[str, dict[int, Snippet]]] = {}
        self._idle: dict[str, list[Channel]] = {}
        self._limits: dict[str, SharedRate] = {}       # per channel: its rate, for every worker

    def deliver(self, name: str, edition: str, keys: list[str],
                digest: tuple[str, datetime] | None = None) -> ChannelReport:
        """Send the job's `keys` of `edition` on the channel `name` (`digest`: the timetable entry
        and fire time of a digest edition). Raises ChannelStopped, Interrupted, ThreadWaiting (the
        job is retried) or another PipelineError (it fails)."""
        now = datetime.now(UTC)
        report = ChannelReport(channel=name, editions=[edition])
        channel = self._checkout(name)
        ledger = Ledger(engine_for(self.config))
        healthy = False
        try:
            with ledger.engine.begin() as conn:
                report.resent = recover_keys(conn, keys, rule=channel.crash_rule, now=now)
            deliveries = self._deliveries(channel, edition, keys, ledger, now, digest)
            _send_all(channel, deliveries, ledger, report, None, self.stop, bounces=self.config.bounces)
            healthy = report.error is None
        finally:
            ledger.close()
            self._checkin(channel, healthy=healthy)
        log.info("%s %s: %d sent, %d failed, %d unknown, %d deferred, %d resent (%d keys)", name, edition,
                 report.sent, report.failed, report.unknown, report.deferred, report.resent, len(keys))
        if report.error:
            raise ChannelStopped(report.error)
        if self.stop.is_set() and _still_pending(ledger, keys):
            raise Interrupted(f"{name} {edition}: the worker is stopping; the keys left go back to the queue")
        if _thread_waiting(ledger, keys):
            raise ThreadWaiting(f"{name} {edition}: a thread's part waits for the part before it")
        return report

    def close(self) -> None:
        """Close every channel built (an SMTP channel's connections and processes)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for channels in idle.values():
            for channel in channels:
                channel.close()

    # -- channels: one per job running, kept between jobs ---------------------------------------

    def _checkout(self, name: str) -> Channel:
        with self._lock:
            if self._idle.get(name):
                return self._idle[name].pop()
        return shared(build_channel(self.config, name), engine_for(self.config), self._limits)

    def _checkin(self, channel: Channel, *, healthy: bool) -> None:
        """Keep a channel for the next job; one that stopped (its connections may be gone) is closed."""
        if not healthy:
            channel.close()
            return
        with self._lock:
            self._idle.setdefault(channel.name, []).append(channel)

    # -- what a job sends ---------------------------------------------------------------------

    def _deliveries(self, channel: Channel, edition: str, keys: list[str], ledger: Ledger,
                    now: datetime, digest: tuple[str, datetime] | None) -> Iterator[Delivery | Email]:
        """The job's keys still pending and due, as the inline publisher streams them: emails
        filled in from the edition rendered once, then social posts and articles in thread order."""
        rows = _pending_rows(ledger, keys, now)
        emails = [r for r in rows if r.kind == "email"]
        others = [r for r in rows if r.kind != "email"]
        if emails:
            recipients = _recipients(ledger, [r.key for r in emails], now)
            compiled = self._email_edition(channel.name, edition, digest)
            yield from _emails(self.config, channel, compiled, ledger, dry_run=False, now=now,
                               unfilled=getattr(channel, "fills", False), recipients=iter(recipients))
        if not others:
            return
        item, by_network = self._social(channel, edition)
        yield from social_deliveries(channel.name, item, others, by_network)

    def _post(self, slug: str) -> Post:
        """The post `slug` (the posts are read again when a job names one not seen yet)."""
        if slug not in self._posts:
            self._read_posts()
        if slug not in self._posts:
            raise UnknownEdition(f"edition {slug!r}: no post has this slug (renamed or deleted?); "
                                 "its deliveries stay pending")
        return self._posts[slug]

    def _read_posts(self) -> None:
        from pipeline.intake.sources import load_all

        self._posts = {p.slug: p for p in load_all(self.config).posts}

    def _email_edition(self, name: str, slug: str, digest: tuple[str, datetime] | None) -> Edition:
        with self._render:
            if (name, slug) not in self._emails:
                if digest is not None:
                    self._emails[(name, slug)] = self._digest(name, slug, *digest)
                else:
                    from pipeline.render.email import render_edition

                    self._emails[(name, slug)] = render_edition(self._post(slug), self.config, channel=name)
            return self._emails[(name, slug)]

    def _digest(self, name: str, key: str, entry_name: str, fire_time: datetime) -> Edition:
        """The digest `key` compiled again as the timetable compiled it: the entry's period up to
        `fire_time`, with the posts the planner recorded as in it."""
        from pipeline.timetable.digests import digest_key, digest_members, recompiled_digest

        entry = next((e for e in self.config.schedule if e.name == entry_name), None)
        if entry is None or digest_key(self.config, entry, fire_time) != key:
            raise UnknownEdition(f"edition {key!r}: no timetable entry {entry_name!r} makes it any more; "
                                 "its deliveries stay pending")
        members = digest_members(self.config, name, key)
        if not self._posts.keys() >= set(members):      # a post this process has not read yet
            self._read_posts()
        return recompiled_digest(self.config, entry, name, fire_time, list(self._posts.values()), members)

    def _social(self, channel: Channel, slug: str) -> tuple[Rendered, dict[str, dict[int, Snippet]]]:
        """The post rendered, and each network's numbered parts rendered for this channel."""
        with self._render:
            if slug not in self._rendered:
                from pipeline.preview import render_post

                self._rendered[slug] = render_post(self._post(slug), self.config)
            item = self._rendered[slug]
            if (channel.name, slug) not in self._parts:
                self._parts[(channel.name, slug)] = {
                    n: dict(_numbered_parts(self.config, channel, item, n)) for n in _networks(channel, item)
                } if "social" in channel.kinds else {}
            return item, self._parts[(channel.name, slug)]


def _pending_rows(ledger: Ledger, keys: list[str], now: datetime) -> list:  # type: ignore[type-arg]
    """(key, kind, network, part) of those of `keys` that are pending and due."""
    d = deliveries.c
    query = (select(d.key, d.kind, d.network, d.part)
             .where(d.key.in_(bindparam("keys", expanding=True)), d.status == Status.PENDING.value,
                    or_(d.next_attempt_at.is_(None), d.next_attempt_at <= now))
             .order_by(d.key))
    with ledger.engine.connect() as conn:
        return list(conn.execute(query, {"keys": keys}))


def _recipients(ledger: Ledger, keys: list[str], now: datetime) -> list[tuple[str, str, str | None, str]]:
    """`Ledger.pending_rows`' (key, email, name, uid) for these email keys: still pending, to an
    active subscriber."""
    d, s = deliveries.c, subscribers.c
    query = (select(d.key, s.email, s.name, s.uid)
             .select_from(deliveries.join(subscribers, s.email_key == d.recipient))
             .where(d.key.in_(bindparam("keys", expanding=True)), d.status == Status.PENDING.value,
                    s.status == SubscriberStatus.ACTIVE.value)
             .order_by(d.key))
    with ledger.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query, {"keys": keys})]  # type: ignore[misc]


def _still_pending(ledger: Ledger, keys: list[str]) -> bool:
    d = deliveries.c
    query = select(d.key).where(d.key.in_(bindparam("keys", expanding=True)),
                                d.status == Status.PENDING.value).limit(1)
    with ledger.engine.connect() as conn:
        return conn.execute(query, {"keys": keys}).first() is not None


def _thread_waiting(ledger: Ledger, keys: list[str]) -> bool:
    """Whether a thread's later part among `keys` is still pending and due (its previous part, in
    another job, was not sent yet when this one came to it)."""
    d = deliveries.c
    query = select(d.key).where(d.key.in_(bindparam("keys", expanding=True)),
                                d.status == Status.PENDING.value, d.part > 1,
                                d.next_attempt_at.is_(None)).limit(1)
    with ledger.engine.connect() as conn:
        return conn.execute(query, {"keys": keys}).first() is not None


def register(app: procrastinate.App, deliverer: Deliverer) -> None:
    """Register `pipeline.deliver` on `app`, run by `deliverer`."""

    @app.task(name=TASK, queue=QUEUE, retry=RETRY)
    def deliver(channel: str, edition: str, keys: list[str], digest_entry: str | None = None,
                digest_fire: str | None = None) -> None:
        digest = (digest_entry, datetime.fromisoformat(digest_fire)) if digest_entry and digest_fire else None
        deliverer.deliver(channel, edition, keys, digest)
