"""Reading the bounce mailbox: each unread message becomes the events it reports (bounces,
complaints, unsubscribes by mail), each recorded once (`store.events` applies the status rules),
and the message is then marked read, so that it is read once.

Which subscriber a message is about: first the VERP address it came back to (which also names
the edition), else the address the report names. A message nobody can read is marked read all
the same, with one line in the log, so that it is not read again at every run.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from enum import StrEnum

from sqlalchemy import Engine, and_, func, select

from pipeline.bounces import arf, dsn, verp
from pipeline.bounces.classify import classify
from pipeline.bounces.headers import address_fields, first_text, header_text, message_key, parse
from pipeline.bounces.mailbox import Incoming, open_mailbox
from pipeline.config import Config
from pipeline.errors import PipelineError, StateError
from pipeline.models import Status
from pipeline.store.engine import engine_for
from pipeline.store.events import Event, EventKind, counts, record
from pipeline.store.schema import deliveries, subscriber_events
from pipeline.store.subscribers import Subscriber, find, resolve_token, state_secret

log = logging.getLogger(__name__)

MAX_MESSAGES = 5000                 # messages read per run; the rest wait for the next one
COMPLAINT_LIMIT = 0.003             # Gmail's and Yahoo's bulk-sender limit on the spam rate
_TOKEN = re.compile(r"\bunsubscribe\s+<?([0-9a-f]{32}\.[0-9a-f]{40})\b", re.IGNORECASE)


class MessageClass(StrEnum):
    """What a message turned out to be (a message that names several addresses counts once, as
    the most telling of them: see `_PRIORITY`)."""

    HARD = "hard"                   # DSN: the address does not exist
    SOFT = "soft"                   # DSN: temporary, or a failure without a code
    POLICY = "policy"               # DSN: refused by policy (5.7.x)
    COMPLAINT = "complaint"         # ARF: marked as spam
    UNSUBSCRIBE = "unsubscribe"     # a mail to unsubscribe.mailto with a valid token
    IGNORED = "ignored"             # a delay notice, a feedback report that is no complaint
    UNKNOWN = "unknown"             # a report about an address that is not on the list
    REJECTED = "rejected"           # a mail to unsubscribe.mailto without a valid token
    NOT_UNDERSTOOD = "not-understood"
    DUPLICATE = "duplicate"         # every event in it was recorded before


LABELS = {
    MessageClass.HARD: "bounces: hard (address does not exist)",
    MessageClass.SOFT: "bounces: soft (temporary, mailbox full, ...)",
    MessageClass.POLICY: "bounces: refused by policy (5.7.x)",
    MessageClass.COMPLAINT: "complaints (marked as spam)",
    MessageClass.UNSUBSCRIBE: "unsubscribes by mail",
    MessageClass.IGNORED: "no action needed (delays, other reports)",
    MessageClass.UNKNOWN: "about an address not on the list",
    MessageClass.REJECTED: "unsubscribe mails without a valid token",
    MessageClass.NOT_UNDERSTOOD: "not understood",
    MessageClass.DUPLICATE: "already recorded",
}

_PRIORITY = [MessageClass.COMPLAINT, MessageClass.UNSUBSCRIBE, MessageClass.HARD, MessageClass.SOFT,
             MessageClass.POLICY, MessageClass.UNKNOWN, MessageClass.DUPLICATE]
_BY_KIND = {EventKind.HARD: MessageClass.HARD, EventKind.SOFT: MessageClass.SOFT,
            EventKind.POLICY: MessageClass.POLICY, EventKind.COMPLAINT: MessageClass.COMPLAINT,
            EventKind.UNSUBSCRIBE: MessageClass.UNSUBSCRIBE}


@dataclass(frozen=True, kw_only=True)
class Reading:
    """What one message says: the events it gives (none for the classes without any) and, for
    those, why (logged)."""

    kind: MessageClass
    events: tuple[Event, ...] = ()
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class Change:
    """A subscriber whose status a message changed."""

    email: str
    status: str
    kind: str
    source: str
    edition: str | None


@dataclass(frozen=True, kw_only=True)
class MailboxReport:
    """What one reading of the mailbox did: messages read, their classes, the subscribers whose
    status changed, the events found (recorded unless `dry_run`), one line for each message
    that changed nothing (not understood, no valid token, an address not on the list), and how
    many unread messages were left for the next run (over the per-run limit)."""

    where: str
    messages: int
    classes: dict[str, int]
    changes: tuple[Change, ...]
    events: tuple[Event, ...]
    notes: tuple[str, ...]
    left: int
    dry_run: bool


# -- one message --------------------------------------------------------------------------------

def interpret(raw: bytes, config: Config, engine: Engine, *, secret: str) -> Reading:
    """What a message of the bounce mailbox is, and the events it gives. Never raises on a
    malformed or hostile message (it is `not understood`); a database problem raises StateError."""
    try:
        return _interpret(raw, config, engine, secret=secret)
    except StateError:
        raise
    except Exception as exc:   # a message no parser expected: read it as not understood
        return Reading(kind=MessageClass.NOT_UNDERSTOOD,
                       note=f"unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")


def _interpret(raw: bytes, config: Config, engine: Engine, *, secret: str) -> Reading:
    msg = parse(raw)
    key = message_key(msg, raw)
    report = arf.parse(msg)
    if report is not None:
        return _complaint(report, key, config, engine)
    mailto = config.unsubscribe.mailto
    if mailto and _addressed_to(msg, mailto):
        return _unsubscribe(msg, key, engine, secret=secret, mailto=mailto)
    return _bounce(dsn.parse(msg), key, config, engine)


def _complaint(report: arf.Report, key: str, config: Config, engine: Engine) -> Reading:
    if not report.is_complaint:
        return Reading(kind=MessageClass.IGNORED,
                       note=f"a feedback report of type {report.feedback_type or '(none)'}")
    target = _by_verp(report.returned_to, config, engine)
    if target is None:
        known = next((s for s in (_find(engine, a) for a in report.recipients) if s), None)
        target = (known, None) if known else None
    if target is not None:
        subscriber, edition = target
        email = subscriber.email
    elif report.recipients:
        email, edition = report.recipients[0], None
    else:
        return Reading(kind=MessageClass.UNKNOWN, note="a complaint that names no address (redacted)")
    return Reading(kind=MessageClass.COMPLAINT, events=(Event(
        event_id=f"arf:{key}:{email.lower()}", email=email, kind=EventKind.COMPLAINT, source="arf",
        edition=edition, detail=report.detail),))


def _unsubscribe(msg: Message, key: str, engine: Engine, *, secret: str, mailto: str) -> Reading:
    # The Subject is what List-Unsubscribe's mailto: sets; a mail client that drops it leaves the
    # request in the body. A valid token is the proof (the From may be a forwarding address).
    found = _TOKEN.search(header_text(msg, "Subject")) or _TOKEN.search(first_text(msg, 2000))
    subscriber = resolve_token(engine, found[1].lower(), secret) if found else None
    if subscriber is None:
        return Reading(kind=MessageClass.REJECTED, note=f"sent to {mailto}")
    return Reading(kind=MessageClass.UNSUBSCRIBE, events=(Event(
        event_id=f"mailto:{key}:{subscriber.email.lower()}", email=subscriber.email,
        kind=EventKind.UNSUBSCRIBE, source="mailto", detail=f"mail to {mailto}"),))


def _bounce(bounce: dsn.Bounce, key: str, config: Config, engine: Engine) -> Reading:
    failed = [f for f in bounce.failures if f.kind is not None]
    target = _by_verp(bounce.returned_to, config, engine)
    if target is not None:
        subscriber, edition = target
        email = subscriber.email
        if failed:
            pick = next((f for f in failed if f.recipient.lower() == email.lower()), failed[0])
            kind, detail = pick.kind, pick.detail
        elif bounce.failures:
            return Reading(kind=MessageClass.IGNORED, note="a delay notice")
        else:
            # Came back to a VERP address, yet no report anyone can read: the notice's own
            # status code, if it has one, says what failed (an auto-reply has none).
            kind = classify(bounce.notice_status, bounce.notice_reply)
            if kind is None:
                return Reading(kind=MessageClass.NOT_UNDERSTOOD,
                               note="a message to a VERP address with no delivery report or status code")
            detail = f"{bounce.notice_status or bounce.notice_reply} (from the notice; no delivery report)"
        assert kind is not None
        return Reading(kind=_BY_KIND[kind], events=(Event(
            event_id=f"dsn:{key}:{email.lower()}", email=email, kind=kind, source="dsn", edition=edition,
            detail=detail),))
    if not failed:
        if bounce.failures:
            return Reading(kind=MessageClass.IGNORED, note="a delay notice")
        return Reading(kind=MessageClass.NOT_UNDERSTOOD, note="no delivery report, feedback report or "
                       "unsubscribe request found")
    events = tuple(Event(event_id=f"dsn:{key}:{f.recipient.lower()}", email=f.recipient, kind=f.kind,
                         source="dsn", detail=f.detail) for f in failed if f.kind is not None)
    return Reading(kind=_BY_KIND[events[0].kind], events=events)


def _by_verp(addresses: tuple[str, ...], config: Config, engine: Engine
             ) -> tuple[Subscriber, str | None] | None:
    """The subscriber (and edition) of the first VERP address among `addresses` that names one."""
    base = config.bounces.address
    if not base:
        return None
    for address in addresses:
        decoded = verp.decode(address, base)
        if decoded is None:
            continue
        subscriber = find(engine, uid=decoded[0])
        if subscriber is not None:
            return subscriber, _edition(engine, subscriber.email, decoded[1])
    return None


def _edition(engine: Engine, email: str, tag: str) -> str | None:
    """The edition sent to `email` whose VERP tag is `tag`, from the ledger."""
    d = deliveries.c
    with engine.connect() as conn:
        editions = conn.execute(select(d.edition).where(d.recipient == email.lower()).distinct()).scalars()
        return next((e for e in editions if verp.edition_tag(e) == tag), None)


def _find(engine: Engine, address: str) -> Subscriber | None:
    try:
        return find(engine, address=address)
    except ValueError:           # not an address email-validator accepts: nobody on the list
        return None


def _addressed_to(msg: Message, address: str) -> bool:
    wanted = address.lower()
    return any(a.lower() == wanted for name in ("Delivered-To", "X-Original-To", "Envelope-To", "To", "Cc")
               for a in address_fields(msg, name))


# -- the mailbox --------------------------------------------------------------------------------

def read_mailbox(config: Config, *, dry_run: bool = False, limit: int = MAX_MESSAGES) -> MailboxReport:
    """Read the unread messages of the bounce mailbox (at most `limit`), record their events and
    mark them read. With `dry_run`, nothing is recorded or marked: the report says what would be.
    Raises MailboxError when the mailbox cannot be read (the messages done so far stay done)."""
    engine = engine_for(config)
    secret = (config.unsubscribe.secret.get_secret_value() if config.unsubscribe.secret
              else state_secret(engine))
    classes: dict[str, int] = {}
    changes: list[Change] = []
    found: list[Event] = []
    notes: list[str] = []
    read = 0
    with open_mailbox(config) as box:
        refs = box.unread()
        for ref in refs[:limit]:
            incoming = box.read(ref)
            if incoming is None:
                continue
            read += 1
            reading = interpret(incoming.raw, config, engine, secret=secret)
            kind = reading.kind
            if reading.events:
                kind = _apply(engine, config, reading, changes, dry_run=dry_run)
                found += reading.events
            if kind in (MessageClass.NOT_UNDERSTOOD, MessageClass.REJECTED, MessageClass.UNKNOWN):
                notes.append(f"{box.where}: message {ref} {_describe(incoming)}: {LABELS[kind]}"
                             + (f" ({reading.note})" if reading.note else "")
                             + ("; left unread (dry run)" if dry_run else "; marked read"))
            classes[kind] = classes.get(kind, 0) + 1
            if not dry_run:
                box.done(ref)
        where = box.where
    return MailboxReport(where=where, messages=read, classes=classes, changes=tuple(changes),
                         events=tuple(found), notes=tuple(notes), left=max(0, len(refs) - limit),
                         dry_run=dry_run)


def _apply(engine: Engine, config: Config, reading: Reading, changes: list[Change], *,
           dry_run: bool) -> MessageClass:
    """Record a message's events (or, dry, look up what they would be); the message's class."""
    kinds = []
    for event in reading.events:
        if dry_run:
            kinds.append(_dry_class(engine, event))
            continue
        outcome = record(engine, event, soft_limit=config.bounces.soft_limit,
                         soft_days=config.bounces.soft_days)
        if outcome.duplicate:
            kinds.append(MessageClass.DUPLICATE)
        elif not outcome.known:
            kinds.append(MessageClass.UNKNOWN)
        else:
            kinds.append(_BY_KIND[event.kind])
        if outcome.status:
            changes.append(Change(email=event.email, status=outcome.status, kind=event.kind,
                                  source=event.source, edition=event.edition))
    return min(kinds, key=_PRIORITY.index)


def _dry_class(engine: Engine, event: Event) -> MessageClass:
    e = subscriber_events.c
    with engine.connect() as conn:
        seen = conn.execute(select(e.id).where(e.event_id == event.event_id[:300])).first()
    if seen is not None:
        return MessageClass.DUPLICATE
    return _BY_KIND[event.kind] if _find(engine, event.email) else MessageClass.UNKNOWN


def _describe(incoming: Incoming) -> str:
    """A message as the log names it: its sender's domain and size (no address, no subject: the
    subject of an unsubscribe mail holds its token)."""
    msg = parse(incoming.raw[:65536])
    domain = next(iter(address_fields(msg, "From")), "").rpartition("@")[2] or "unknown sender"
    return f"(from {domain}, {len(incoming.raw)} bytes{', truncated' if incoming.truncated else ''})"


def read_for_run(config: Config, *, dry_run: bool = False) -> MailboxReport | None:
    """The timetable's reading of the bounce mailbox, before it plans: nothing without a mailbox
    configured, nor in a dry run (which changes nothing real: reading marks mail read and changes
    subscribers), and a mailbox that cannot be read is one line in the log, never the end of the
    run (its mail goes out all the same)."""
    if dry_run or (config.bounces.imap is None and config.bounces.maildir is None):
        return None
    try:
        report = read_mailbox(config)
    except StateError:
        raise
    except PipelineError as exc:
        log.warning("bounce mailbox not read: %s", " ".join(str(exc).split()))
        return None
    except Exception as exc:     # a bug must not stop the newsletter: logged, the run goes on
        log.error("bounce mailbox not read: %s: %s", type(exc).__name__, " ".join(str(exc).split()))
        return None
    for note in report.notes:
        log.warning("bounce mailbox: %s", note)
    if report.messages:
        log.info("bounce mailbox: %d message(s): %s; %d subscriber(s) changed status", report.messages,
                 ", ".join(f"{n} {k}" for k, n in sorted(report.classes.items())), len(report.changes))
    return report


# -- rates --------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Rates:
    """Messages sent in the last `days` and the bounces and complaints recorded meanwhile."""

    days: int
    sent: int
    bounces: int
    complaints: int

    @property
    def bounce_rate(self) -> float | None:
        return self.bounces / self.sent if self.sent else None

    @property
    def complaint_rate(self) -> float | None:
        return self.complaints / self.sent if self.sent else None

    @property
    def complaints_too_high(self) -> bool:
        """At or above Gmail's and Yahoo's limit (0.3%)."""
        rate = self.complaint_rate
        return rate is not None and rate >= COMPLAINT_LIMIT


def rates(engine: Engine, *, days: int = 30, now: datetime | None = None) -> Rates:
    """The bounce and complaint rates of the last `days`: events of each kind (from every
    source) per email sent (real sends only) in that window."""
    since = (now or datetime.now(UTC)) - timedelta(days=days)
    by_kind = counts(engine, since=since)
    d = deliveries.c
    with engine.connect() as conn:
        sent = conn.execute(select(func.count()).select_from(deliveries).where(and_(
            d.kind == "email", d.status == Status.SENT, d.dry_run.is_(False), d.sent_at >= since))
        ).scalar_one()
    return Rates(days=days, sent=int(sent),
                 bounces=sum(by_kind.get(k, 0) for k in (EventKind.HARD, EventKind.SOFT, EventKind.POLICY)),
                 complaints=by_kind.get(EventKind.COMPLAINT, 0))
