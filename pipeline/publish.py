"""The orchestrator: for each channel and post, plan deliveries in the ledger, skip what is
already sent, write the intent, send through the channel, record the receipt.

The ledger, not the caller, is what prevents a double send: running `publish` twice sends nothing
the second time, and a run killed half-way resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from pipeline.bounces import verp
from pipeline.channels.base import Channel
from pipeline.channels.registry import CHANNELS, build_channel
from pipeline.channels.smtp_session import envelope_address
from pipeline.config import BounceSettings, Config
from pipeline.errors import ChannelError, PipelineError
from pipeline.models import Delivery, Edition, Post, Receipt, Rendered, Snippet, Status
from pipeline.plan import article_key, key_prefix, select_posts, social_key

# The reading, rendering and database modules (SQLAlchemy, the renderers: half a second) are
# imported where first used, so that a publish starts its SMTP worker processes before it loads
# them and the two start-ups overlap.
if TYPE_CHECKING:
    from pipeline.channels.pump import Email
    from pipeline.store.ledger import Ledger

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ChannelReport:
    """What one channel did in one run."""

    channel: str
    editions: list[str] = field(default_factory=list)
    sent: int = 0
    already_sent: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    resent: int = 0             # rows a crash left `sending`, resent (or marked unknown) now
    total: int = 0              # deliveries due in this run
    bounced: int = 0            # addresses this run's refusals marked `bounced`
    jobs: int | None = None     # delivery jobs deferred to `pipeline worker`s (None: sent here)
    error: str | None = None    # the channel stopped (unreachable, login refused, ...)
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, what: str, error: str | None = None, *, count: int = 1) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + count)
            if error and len(self.errors) < 20:
                self.errors.append(error)


Progress = Callable[[ChannelReport], None]


def publish(config: Config, *, slugs: Sequence[str] = (), channels: Sequence[str] = (),
            dry_run: bool = False, now: datetime | None = None, progress: Progress | None = None,
            stop: threading.Event | None = None) -> list[ChannelReport]:
    """Send the given posts (default: the newest) to the given channels (default: all)."""
    now = now or datetime.now(UTC)
    names = list(channels or config.channels)
    if all(_email_only(config, name) for name in names):
        # The channels' worker processes start first, beside the imports and the rendering below.
        started = _started(config, names, dry_run=dry_run)
        try:
            from pipeline.intake.sources import load_all
            from pipeline.render.email import render_edition

            posts = select_posts(load_all(config, now=now).posts, slugs, now)
            # An email edition is all these channels send: each is rendered here, before anything
            # is sent (a post that cannot be rendered stops the run first, as below), and no
            # network's snippets are (twitter-text alone takes a second to load).
            editions = {(name, p.slug): render_edition(p, config, channel=name)
                        for p in posts for name in names}
            return [publish_rendered(config, posts, name, dry_run=dry_run, now=now, progress=progress,
                                     stop=stop, editions=editions, channel=started.pop(name, None))
                    for name in names]
        finally:
            for channel in started.values():
                channel.close()
    from pipeline.intake.sources import load_all
    from pipeline.preview import render_post  # snippets too: a channel of email alone never loads it

    posts = select_posts(load_all(config, now=now).posts, slugs, now)

    rendered = [render_post(p, config) for p in posts]
    return [publish_rendered(config, rendered, name, dry_run=dry_run, now=now, progress=progress,
                             stop=stop) for name in names]


def _started(config: Config, names: Sequence[str], *, dry_run: bool) -> dict[str, Channel]:
    """The channels of `names` that can start their workers ahead of the first send (SMTP's
    processes), built and started; a channel that cannot be built is left to `publish_rendered`,
    which reports why."""
    started: dict[str, Channel] = {}
    for name in names if not _deferring(config, dry_run=dry_run) else ():
        try:
            channel = build_channel(config, name, dry_run=dry_run)
        except PipelineError:
            continue
        if callable(start := getattr(channel, "start", None)):
            start()
            started[name] = channel
        else:
            channel.close()
    return started


def _deferring(config: Config, *, dry_run: bool) -> bool:
    """Whether `pipeline worker`s send what this run plans (`execution: workers`; a dry run is
    sent here, into the outbox)."""
    return config.execution == "workers" and not dry_run


def _email_only(config: Config, name: str) -> bool:
    """Whether the channel `name` sends email and nothing else (False when it is not a valid
    channel: building it reports that)."""
    entry = config.channels.get(name)
    kind = entry.get("type") if isinstance(entry, dict) else None
    return isinstance(kind, str) and kind in CHANNELS and CHANNELS[kind].kinds == frozenset({"email"})


def retry(config: Config, *, failed: bool = False, unknown: bool = False, channels: Sequence[str] = (),
          dry_run: bool = False, progress: Progress | None = None) -> list[ChannelReport]:
    """Re-attempt pending deliveries (and failed / unknown ones when asked), per channel."""
    from pipeline.intake.sources import load_all
    from pipeline.store.engine import engine_for
    from pipeline.store.ledger import Ledger

    ledger = Ledger(engine_for(config))
    try:
        statuses = [s for s, wanted in ((Status.FAILED, failed), (Status.UNKNOWN, unknown)) if wanted]
        for name in channels or [None]:
            if statuses:
                ledger.reset(statuses, channel=name, dry_run=dry_run)
        todo = ledger.pending_editions(dry_run=dry_run)
    finally:
        ledger.close()
    from pipeline.preview import render_post  # a retry may send snippets: only then loaded

    posts = {p.slug: p for p in load_all(config).posts}
    reports = []
    now = datetime.now(UTC)
    for name, editions in todo.items():
        if channels and name not in channels:
            continue
        if rendered := [render_post(posts[e], config) for e in editions if e in posts]:
            reports.append(publish_rendered(config, rendered, name, dry_run=dry_run, now=now,
                                            progress=progress))
        for key in (e for e in editions if e not in posts):
            reports.extend(_retry_digest(config, name, key, list(posts.values()), dry_run=dry_run, now=now,
                                         progress=progress))
    return reports


def _retry_digest(config: Config, name: str, key: str, posts: list[Post], *, dry_run: bool, now: datetime,
                  progress: Progress | None) -> list[ChannelReport]:
    """The pending deliveries of the edition `key` that is no post: a digest whose send was cut
    short, compiled again as its fire made it, and sent (or deferred) with the usual rules."""
    from pipeline.timetable.digests import digest_fire, digest_members, recompiled_digest

    found = digest_fire(config, name, key)
    if found is None:
        log.warning("%s: edition %r has pending deliveries, but no post has that slug and no digest entry "
                    "of the timetable made it; they stay pending (restore the post or the entry)", name, key)
        return []
    entry, fire_time = found
    edition = recompiled_digest(config, entry, name, fire_time, posts, digest_members(config, name, key))
    return [publish_edition(config, edition, name, dry_run=dry_run, now=now, progress=progress,
                            digest=(entry.name, fire_time))]


def publish_rendered(config: Config, rendered: Sequence[Rendered | Post], name: str, *, dry_run: bool,
                     now: datetime, progress: Progress | None = None,
                     stop: threading.Event | None = None,
                     editions: dict[tuple[str, str], Edition] | None = None,
                     channel: Channel | None = None) -> ChannelReport:
    """Push rendered posts through the channel `name`. A channel that fails is reported, never
    raised: one channel failing never stops the others. A bare Post is rendered when the channel
    needs more than its email edition; `editions`: (channel, slug) -> the edition already
    rendered for that channel; `channel`: `name` already built (closed here, as one built here)."""
    report = ChannelReport(channel=name, editions=[_post(r).slug for r in rendered])
    if channel is None:
        try:
            channel = build_channel(config, name, dry_run=dry_run)
        except PipelineError as exc:
            report.error = str(exc)
            return report
    ledger = _ledger(config)
    try:
        if _deferring(config, dry_run=dry_run):
            # Planned here and sent by `pipeline worker`s (pipeline/workers/), which own the rows
            # left `sending`: nothing is recovered channel-wide.
            from pipeline.workers.defer import defer_pending

            for item in rendered:
                list(_plan(config, channel, item, ledger, report, dry_run=dry_run, now=now, defer=True,
                           edition=(editions or {}).get((name, _post(item).slug))))
            deferred = defer_pending(config, ledger.engine, channel=name, editions=report.editions,
                                     crash_rule=channel.crash_rule, now=now)
            report.jobs, report.resent = deferred.jobs, deferred.recovered
            return report
        report.resent = _recover(channel, ledger, dry_run=dry_run)
        for item in rendered:
            deliveries = _plan(config, channel, item, ledger, report, dry_run=dry_run, now=now,
                               edition=(editions or {}).get((name, _post(item).slug)))
            _send_all(channel, deliveries, ledger, report, progress, stop or threading.Event(),
                      bounces=config.bounces)
            if report.error:
                break
    finally:
        channel.close()
        ledger.close()
    return report


def publish_edition(config: Config, edition: Edition, name: str, *, dry_run: bool, now: datetime,
                    progress: Progress | None = None, stop: threading.Event | None = None,
                    digest: tuple[str, datetime] | None = None) -> ChannelReport:
    """Send a compiled edition that is not one post's (a digest) to the subscribers of the email
    channel `name`, with the same ledger rules as `publish_rendered`. `digest`: the timetable
    entry and fire time it was compiled for, from which `pipeline worker`s compile it again
    (with `execution: workers`; without it, the edition is sent here)."""
    report = ChannelReport(channel=name, editions=[edition.key])
    try:
        channel = build_channel(config, name, dry_run=dry_run)
    except PipelineError as exc:
        report.error = str(exc)
        return report
    if "email" not in channel.kinds:
        report.error = f"channel {name}: a {edition.key} edition is an email; this channel sends no email"
        return report
    ledger = _ledger(config)
    deferring = _deferring(config, dry_run=dry_run)
    try:
        if deferring:       # workers own the rows left `sending` that a live job holds
            from pipeline.workers.defer import recover_orphans

            report.resent = recover_orphans(ledger.engine, channel=name, edition=edition.key,
                                            crash_rule=channel.crash_rule, now=now)
        else:
            report.resent = _recover(channel, ledger, dry_run=dry_run)
        report.already_sent = ledger.edition_counts(channel=name, edition=edition.key,
                                                    dry_run=dry_run).get(Status.SENT, 0)
        ledger.plan_recipients(channel=name, edition=edition.key, dry_run=dry_run,
                               key_prefix=key_prefix(name, edition.key, dry_run=dry_run))
        report.total = ledger.edition_counts(channel=name, edition=edition.key,
                                             dry_run=dry_run).get(Status.PENDING, 0)
        if deferring and digest is not None:
            from pipeline.workers.defer import defer_pending

            entry, fire_time = digest
            report.jobs = defer_pending(config, ledger.engine, channel=name, editions=[edition.key],
                                        crash_rule=channel.crash_rule, now=now,
                                        extra={"digest_entry": entry,
                                               "digest_fire": fire_time.isoformat()}).jobs
            return report
        deliveries = _emails(config, channel, edition, ledger, dry_run=dry_run, now=now,
                             unfilled=getattr(channel, "fills", False))
        _send_all(channel, deliveries, ledger, report, progress, stop or threading.Event(),
                  bounces=config.bounces)
    finally:
        channel.close()
        ledger.close()
    return report


def _ledger(config: Config) -> Ledger:
    from pipeline.store.engine import engine_for
    from pipeline.store.ledger import Ledger

    return Ledger(engine_for(config))


def _recover(channel: Channel, ledger: Ledger, *, dry_run: bool) -> int:
    """Resolve what an earlier run left `sending` (with its send journal's evidence, when the
    channel keeps one); how many rows are resent."""
    evidence = getattr(channel, "crash_evidence", lambda: None)()
    resent = ledger.recover(channel.name, rule=channel.crash_rule, dry_run=dry_run, evidence=evidence)
    if evidence is not None:
        channel.forget_crashes()  # type: ignore[attr-defined]
    return resent


def _post(item: Rendered | Post) -> Post:
    return item.post if isinstance(item, Rendered) else item


def _plan(config: Config, channel: Channel, item: Rendered | Post, ledger: Ledger, report: ChannelReport,
          *, dry_run: bool, now: datetime, edition: Edition | None = None,
          defer: bool = False) -> Iterator[Delivery | Email]:
    """Planned rows in the ledger, then the deliveries still due, streamed. `edition`: the
    email edition for this channel, when it is already rendered; `defer`: only plan (yielding
    nothing), for workers to send."""
    post = _post(item)
    slug = post.slug
    if "email" in channel.kinds and edition is None:      # rendered before anything is planned
        from pipeline.render.email import render_edition

        edition = render_edition(post, config, channel=channel.name)
    if channel.kinds - {"email"} and not isinstance(item, Rendered):
        from pipeline.preview import render_post

        item = render_post(post, config)
    before = ledger.edition_counts(channel=channel.name, edition=slug, dry_run=dry_run)
    planned = 0         # new rows, all pending: the count after planning without a second scan
    recipients: Iterator[tuple[str, str, str | None, str]] | None = None
    if "email" in channel.kinds:
        topics = tuple(config.subscribe.topics)
        about = tuple(t for t in topics if t.casefold() in {tag.casefold() for tag in post.tags})
        plan = dict(channel=channel.name, edition=slug, dry_run=dry_run, topics=topics, about=about,
                    key_prefix=key_prefix(channel.name, slug, dry_run=dry_run))
        if defer:
            planned += ledger.plan_recipients(**plan)  # type: ignore[arg-type]
        else:
            # Planned a chunk at a time while the first chunks are sent; `total` grows as it goes.
            recipients = ledger.planning(**plan,  # type: ignore[arg-type]
                                         planned=lambda count: report.add("total", count=count))
    # Each network's parts are rendered once for this channel: planned here, sent below.
    by_network = ({n: dict(_numbered_parts(config, channel, item, n)) for n in _networks(channel, item)}
                  if "social" in channel.kinds and isinstance(item, Rendered) else {})
    for network, numbered in by_network.items():
        for part in numbered:
            planned += ledger.plan(key=social_key(channel.name, slug, network, part, dry_run=dry_run),
                                   channel=channel.name, edition=slug, kind="social", network=network,
                                   part=part, dry_run=dry_run)
    if "article" in channel.kinds:
        planned += ledger.plan(key=article_key(channel.name, slug, dry_run=dry_run), channel=channel.name,
                               edition=slug, kind="article", dry_run=dry_run)
    report.already_sent += before.get(Status.SENT, 0)
    report.total += before.get(Status.PENDING, 0) + planned
    if defer:
        return
    if edition is not None:
        yield from _emails(config, channel, edition, ledger, dry_run=dry_run, now=now,
                           unfilled=getattr(channel, "fills", False), recipients=recipients)
    if not isinstance(item, Rendered):
        return
    rows = ledger.rows(channel=channel.name, edition=slug, status=Status.PENDING, dry_run=dry_run, due=now)
    yield from social_deliveries(channel.name, item, rows, by_network)


def social_deliveries(channel: str, item: Rendered, rows: Iterable[Any],
                      by_network: dict[str, dict[int, Snippet]]) -> Iterator[Delivery]:
    """The social posts and articles of `rows` (pending ledger rows of `item`'s edition: key,
    kind, network, part), thread parts in order; `by_network`: each network's numbered parts."""
    slug = item.post.slug
    for row in sorted(rows, key=lambda r: (r.kind, r.network or "", r.part)):
        parts = by_network.get(row.network or "", {}) if row.kind == "social" else {}
        if row.part in parts:
            yield Delivery(key=row.key, channel=channel, edition=slug, kind="social",
                           network=row.network, part=row.part, snippet=parts[row.part], rendered=item)
        elif row.kind == "article":
            yield Delivery(key=row.key, channel=channel, edition=slug, kind="article", rendered=item)


def _numbered_parts(config: Config, channel: Channel, item: Rendered,
                    network: str) -> list[tuple[int, Snippet]]:
    """(part number, snippet): 0 for a single post, 1..n for the parts of a thread. Rendered
    again for this channel, so that its links carry `utm_source=<channel>`."""
    from pipeline.render.social import snippet, thread  # a channel of email alone never loads it

    if network not in item.snippets:
        return []
    post = item.post
    parts = (thread(post, network, config, channel=channel.name) if post.thread
             else (snippet(post, network, config, channel=channel.name),))
    return [(0, parts[0])] if len(parts) == 1 else list(enumerate(parts, 1))


def _networks(channel: Channel, item: Rendered) -> list[str]:
    network = getattr(channel, "network", None)
    return [network] if network else list(item.snippets)


def _emails(config: Config, channel: Channel, edition: Edition, ledger: Ledger, *, dry_run: bool,
            now: datetime, unfilled: bool = False,
            recipients: Iterator[tuple[str, str, str | None, str]] | None = None,
            ) -> Iterator[Delivery | Email]:
    """Email deliveries for the pending recipients (`recipients`, the ledger's (key, email, name,
    uid) rows, else read from the ledger): the edition compiled and serialized once, each message
    filled in for its recipient; `unfilled`: left to the channel's workers."""
    from pipeline.channels.pump import Email
    from pipeline.render.mime import MessageTemplate, list_headers
    from pipeline.store.subscribers import state_secret, token

    sender = getattr(channel, "sender", config.sender)
    template = MessageTemplate(edition, sender=sender, domain=sender_domain(sender, config), date=now,
                               reply_to=getattr(channel, "reply_to", config.email.reply_to),
                               extra_headers=list_headers(config, edition.key))
    unsubscribe = config.unsubscribe
    secret = (unsubscribe.secret.get_secret_value() if unsubscribe.secret
              else state_secret(ledger.engine))
    # The envelope sender is where bounces go: the bounce mailbox when there is one, with VERP an
    # address per recipient and edition (a bounce then names both, however unreadable its report).
    bounce_address = config.bounces.address
    per_recipient = bool(bounce_address and config.bounces.verp)
    common = bounce_address or envelope_address(sender)
    if recipients is None:
        recipients = ledger.pending_rows(channel=channel.name, edition=edition.key, dry_run=dry_run)
    # Looked up once: this loop runs once per subscriber.
    base, fallback, mailto = unsubscribe.base_url, config.email.name_fallback, unsubscribe.mailto
    channel_name, edition_key = channel.name, edition.key
    for key, address, name, uid in recipients:
        tok = token(uid, address, secret)
        unsubscribe_url = f"{base}/unsubscribe/{tok}"
        email = Email(key=key, channel=channel_name, edition=edition_key, recipient=address,
                      envelope_from=(verp.envelope(bounce_address, uid, edition_key)
                                     if per_recipient else common),
                      values={"name": name or fallback, "email": address, "unsubscribe_url": unsubscribe_url,
                              "manage_url": f"{base}/manage/{tok}"},
                      list_unsubscribe=(f"<{unsubscribe_url}>, <mailto:{mailto}?subject=unsubscribe%20{tok}>"
                                        if mailto else f"<{unsubscribe_url}>"),
                      template=template)
        yield email if unfilled else email.delivery()


def sender_domain(sender: str, config: Config) -> str:
    """The domain of the From address (for Message-IDs), else the site's host."""
    return envelope_address(sender).rpartition("@")[2] or config.site.host


def _send_all(channel: Channel, deliveries: Iterator[Delivery | Email], ledger: Ledger,
              report: ChannelReport, progress: Progress | None, stop: threading.Event, *,
              bounces: BounceSettings) -> None:
    """Send with `channel.concurrency` worker threads fed through a small queue: deliveries are
    built only a little ahead of the sends, so memory stays flat however many there are. A
    channel whose worker processes fill in the messages (`channel.fills`: SMTP) gets `Email`s
    and is driven by a `Pump` instead, from this thread. `bounces`: when refused recipients count
    as bounced."""
    from pipeline.channels.pump import Email, Pump

    if callable(use_checkpoints := getattr(channel, "use_checkpoints", None)):
        # A channel that sends in steps (Threads) keeps each step's remote id on the row
        # (`Ledger.checkpoint`) before the next step: after a crash it asks instead of redoing.
        use_checkpoints(ledger)
    if getattr(channel, "fills", False):
        def record_failure(delivery: Delivery, exc: ChannelError, halt: threading.Event) -> None:
            _record_failure(channel, delivery, ledger, report, exc, halt, bounces)

        Pump(channel, channel.workers(), ledger, report, stop,  # type: ignore[attr-defined]
             tick=_Ticker(progress, report), retrying=_retrying(channel), retryable=_retryable,
             record_failure=record_failure).run(deliveries)  # type: ignore[arg-type]
        return
    work: queue.Queue[Delivery | Email | None] = queue.Queue(maxsize=channel.concurrency * 4)
    fatal = threading.Event()
    tick = _Ticker(progress, report)
    retrying = _retrying(channel)

    def worker() -> None:
        while (delivery := work.get()) is not None:
            if not fatal.is_set():
                if isinstance(delivery, Email):
                    delivery = delivery.delivery()
                _deliver(channel, delivery, ledger, report, fatal, retrying, bounces)
                tick()

    threads = [threading.Thread(target=worker, name=f"send-{channel.name}-{i}", daemon=True)
               for i in range(channel.concurrency)]
    for t in threads:
        t.start()
    try:
        for delivery in deliveries:
            if stop.is_set() or fatal.is_set():
                break
            work.put(delivery)
    finally:
        for _ in threads:
            work.put(None)
        for t in threads:
            t.join()
        tick(force=True)


class _Ticker:
    """Calls the progress callback at most ten times a second (it redraws a terminal)."""

    def __init__(self, progress: Progress | None, report: ChannelReport) -> None:
        self.progress, self.report, self.next = progress, report, 0.0

    def __call__(self, force: bool = False) -> None:
        if self.progress and (force or time.monotonic() >= self.next):
            self.next = time.monotonic() + 0.1
            self.progress(self.report)


def deliver_one(channel: Channel, delivery: Delivery, ledger: Ledger, *,
                bounces: BounceSettings) -> ChannelReport:
    """Send one delivery outside a publish (a confirmation email) with exactly its rules: the
    intent written first, temporary failures retried, the result recorded, a refused address
    recorded as a bounce. The report says what happened."""
    report = ChannelReport(channel=channel.name, editions=[delivery.edition])
    _deliver(channel, delivery, ledger, report, threading.Event(), _retrying(channel), bounces)
    return report


def _deliver(channel: Channel, delivery: Delivery, ledger: Ledger, report: ChannelReport,
             fatal: threading.Event, retrying: Retrying, bounces: BounceSettings) -> None:
    if delivery.part > 1:
        chained = _chain(delivery, ledger)
        if chained is None:
            report.add("deferred", f"{delivery.key}: waiting for the thread's previous part")
            return
        delivery = chained
    if not ledger.begin(delivery.key):
        return
    try:
        receipt = _send(channel, delivery, retrying)
    except ChannelError as exc:
        _record_failure(channel, delivery, ledger, report, exc, fatal, bounces)
    except Exception as exc:   # a bug, not a user's mistake: keep the row, log the traceback
        log.exception("%s: unexpected error sending %s", channel.name, delivery.key)
        ledger.fail(delivery.key, f"internal error: {exc!r}", status=Status.UNKNOWN)
        report.add("unknown", f"{delivery.key}: internal error: {exc!r}")
    else:
        ledger.succeed(receipt)
        report.add("sent")


def _send(channel: Channel, delivery: Delivery, retrying: Retrying) -> Receipt:
    """One send with the channel's policy: temporary failures retried with backoff; a rate limit
    whose reset is within `max_wait` seconds waited out (a few times at most); anything else
    raised for the caller to record."""
    max_wait = getattr(getattr(channel, "settings", None), "max_wait", 0)
    for waits in range(4):
        try:
            try:
                return channel.send(delivery)
            except ChannelError as exc:
                if not _retryable(exc):
                    raise
                return retrying(channel.send, delivery)   # the slow path: backoff and jitter
        except ChannelError as exc:
            if exc.retry_after is None or exc.retry_after > max_wait or waits == 3:
                raise
            log.info("%s: rate limited; waiting %.0f s as the network asks", channel.name,
                     exc.retry_after)
            time.sleep(exc.retry_after)
    raise AssertionError("unreachable")


def _chain(delivery: Delivery, ledger: Ledger) -> Delivery | None:
    """A thread part with the remote ids of the thread's first and previous parts, or None while
    the previous part is not sent (a reply needs something to reply to)."""
    base = delivery.key.rsplit(":", 1)[0]
    previous = ledger.get(base if delivery.part == 2 else f"{base}:{delivery.part - 1}")
    root = ledger.get(base)
    if previous is None or root is None or previous.status != Status.SENT:
        return None
    return dataclasses.replace(delivery, reply_to_remote=previous.remote_id,
                               thread_root_remote=root.remote_id)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ChannelError) and exc.retryable and not exc.fatal and exc.retry_after is None


def _retrying(channel: Channel) -> Retrying:
    """Retries after a first temporary failure: `retries` more attempts, exponential backoff
    from `retry_wait` seconds with as much jitter, at most a minute apart."""
    settings = getattr(channel, "settings", None)
    first = getattr(settings, "retry_wait", 2.0)
    return Retrying(retry=retry_if_exception(_retryable),
                    stop=stop_after_attempt(getattr(settings, "retries", 3)),
                    wait=wait_exponential_jitter(multiplier=first, max=max(first, 60), jitter=first),
                    reraise=True)


def _record_failure(channel: Channel, delivery: Delivery, ledger: Ledger, report: ChannelReport,
                    exc: ChannelError, fatal: threading.Event, bounces: BounceSettings) -> None:
    """The failure in the ledger and the report; a recipient's server refusing the recipient is
    also a bounce event for the address (`store.events` decides what it does to its status)."""
    # Imported here: a send that nothing refuses never needs them, and a publish starts sooner.
    from pipeline.bounces.classify import classify
    from pipeline.store import events
    from pipeline.store.subscribers import SubscriberStatus

    message = f"{delivery.key}: {exc}"
    if exc.fatal:
        ledger.release(delivery.key, str(exc))
        if not fatal.is_set():
            fatal.set()
            report.error = f"channel {channel.name}: {exc}"
        return
    if exc.retry_after is not None:
        ledger.release(delivery.key, str(exc), until=datetime.now(UTC) + timedelta(seconds=exc.retry_after))
        report.add("deferred", message)
    elif exc.unknown:
        ledger.fail(delivery.key, str(exc), status=Status.UNKNOWN)
        report.add("unknown", message)
    else:
        kind = classify(exc.status, exc.reply_code) if delivery.kind == "email" and exc.bounce else None
        if kind is not None and delivery.recipient:
            # Recorded before the ledger row leaves `sending`: a crash in between resends, and
            # loses no bounce. The event id is the attempt's: the refusal of a later attempt
            # (`pipeline retry --failed`) counts again, the same refusal never twice. A 4xx that
            # outlived the retries is one attempt, so one soft bounce.
            row = ledger.get(delivery.key)
            outcome = events.record(ledger.engine, events.Event(
                event_id=f"{delivery.key}:{row.attempts if row else 0}", email=delivery.recipient,
                kind=kind, source="smtp", edition=delivery.edition, detail=str(exc)),
                soft_limit=bounces.soft_limit, soft_days=bounces.soft_days)
            if outcome.status == SubscriberStatus.BOUNCED:
                report.add("bounced")
        ledger.fail(delivery.key, str(exc))
        report.add("failed", message)
    log.warning("%s: %s", channel.name, message)

