"""The double opt-in email: "confirm your subscription", sent through the list's email channel.

Each confirmation is one ledger row, keyed `<channel>:confirm:<uid>:<confirm_sent_at>`: the
sign-up that made it due fixes the key, the link's expiry, the Date and the Message-ID, so sending
the same confirmation twice (two workers, a resend after a crash) sends it once, and a resend is
the identical message. The message is transactional: no List-Unsubscribe (the reader is not on
the list), and ignoring it is how one stays off the list.

`ConfirmationSender` sends them one after another on a thread of its own, so that `POST /subscribe`
answers before (and whether or not) any mail is sent: its answer cannot tell who is on the list.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Row, select

from pipeline.bounces.verp import envelope
from pipeline.channels.base import Channel
from pipeline.channels.registry import build_channel
from pipeline.channels.smtp_session import envelope_address
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.models import Delivery, Edition, Status
from pipeline.publish import deliver_one, sender_domain
from pipeline.render.email import compile_mjml, one_line, render_text, site_context
from pipeline.render.mime import build_message
from pipeline.render.personalize import neutralize
from pipeline.store.ledger import Ledger
from pipeline.store.optin import confirm_token
from pipeline.store.schema import subscribers
from pipeline.store.subscribers import SubscriberStatus
from pipeline.web.send_test import email_channel

log = logging.getLogger(__name__)

TEMPLATE = "email/confirm.mjml.j2"
EDITION = "confirm"           # the ledger's `edition` of every confirmation row
# How long the sending thread waits for more work before it ends (it starts again on the next one).
IDLE_SECONDS = 30.0


@dataclass(frozen=True, kw_only=True)
class Confirmation:
    """What sending one confirmation did: `sent`, `already` (the key was sent or is being sent),
    `skipped` (the address needs none any more: confirmed, suppressed or erased) or `failed`."""

    outcome: str
    key: str | None = None
    detail: str = ""


def confirmation_channel(config: Config) -> str:
    """The email channel confirmations go through: `subscribe.channel`, else the first real email
    channel, else the outbox. Raises ConfigError naming the key when there is none that sends
    email."""
    return email_channel(config, key=("subscribe", "channel"), purpose="confirmation emails")


def confirmation_key(channel: str, uid: str, sent_at: datetime) -> str:
    """The ledger key of the confirmation that the sign-up at `sent_at` made due (to the
    microsecond, as the database keeps it: two sign-ups never share a key)."""
    return f"{channel}:{EDITION}:{uid}:{sent_at.astimezone(UTC):%Y%m%dT%H%M%S.%f}"


def confirm_url(config: Config, uid: str, email: str, secret: str, sent_at: datetime) -> str:
    """The link of the confirmation sent at `sent_at`: it works for `subscribe.confirm_days`."""
    expires = sent_at + timedelta(days=config.subscribe.confirm_days)
    return f"{config.unsubscribe.base_url}/confirm/{confirm_token(uid, email, secret, expires=expires)}"


def confirmation_edition(config: Config, *, key: str, email: str, name: str | None, url: str) -> Edition:
    """The confirmation email for one address, compiled from `email/confirm.mjml.j2` and its
    `.txt.j2`. The name and address come from a stranger's form: escaped by the template, and
    never able to pass for a placeholder."""
    subject = one_line(f"Confirm your subscription to {config.site.name}")
    preheader = "One click to start receiving the newsletter; ignore this email if it was not you."
    context = {"site": site_context(config, lambda link: link), "subject": subject,
               "preheader": preheader, "email": neutralize(email), "name": neutralize(name or ""),
               "confirm_url": url, "days": config.subscribe.confirm_days,
               "address": config.site.address or ""}
    return Edition(key=key, subject=subject, preheader=preheader,
                   html=compile_mjml(config, TEMPLATE, context), text=render_text(config, TEMPLATE, context))


def _envelope_from(config: Config, sender: str, uid: str) -> str:
    """The bounce address (VERP'd for this subscriber) when one is configured, else the sender's:
    a confirmation that bounces tells that the address does not exist, like any other bounce."""
    bounce = config.bounces.address
    if bounce is None:
        return envelope_address(sender)
    return envelope(bounce, uid, EDITION) if config.bounces.verp else bounce


def send_confirmation(config: Config, engine: Engine, secret: str, uid: str, *, channel: str,
                      open_channel: Channel | None = None) -> Confirmation:
    """Send the confirmation that is due for the subscriber `uid` (the one its latest sign-up
    made due) through `channel`, by the ledger: planned, intent written, sent, result written.
    `open_channel`: an already built channel named `channel` to send through (kept open by the
    caller); else one is built for this send and closed."""
    c = subscribers.c
    with engine.connect() as conn:
        row = conn.execute(select(c.uid, c.email, c.name, c.status, c.confirm_sent_at)
                           .where(c.uid == uid)).first()
    if row is None or row.confirm_sent_at is None \
            or row.status in (SubscriberStatus.ACTIVE, SubscriberStatus.SUPPRESSED):
        return Confirmation(outcome="skipped")
    key = confirmation_key(channel, row.uid, row.confirm_sent_at)
    ledger = Ledger(engine)
    try:
        ledger.plan(key=key, channel=channel, edition=EDITION, kind="email")
        planned = ledger.get(key)
        if planned is None or planned.status != Status.PENDING:
            return Confirmation(outcome="already", key=key, detail=planned.status if planned else "")
        return _send(config, ledger, row, key, secret, channel, open_channel)
    finally:
        ledger.close()


def _send(config: Config, ledger: Ledger, row: Row[Any], key: str, secret: str, name: str,
          open_channel: Channel | None) -> Confirmation:
    try:
        channel = open_channel or build_channel(config, name)
    except PipelineError as exc:
        ledger.fail(key, str(exc))
        return Confirmation(outcome="failed", key=key, detail=str(exc))
    try:
        sent_at = row.confirm_sent_at.astimezone(UTC)
        edition = confirmation_edition(config, key=key, email=row.email, name=row.name,
                                       url=confirm_url(config, row.uid, row.email, secret, sent_at))
        sender = getattr(channel, "sender", config.sender)
        message = build_message(edition, sender=sender, to=row.email, values={},
                                domain=sender_domain(sender, config), date=sent_at,
                                reply_to=getattr(channel, "reply_to", config.email.reply_to),
                                headers={"Auto-Submitted": "auto-generated"})
        delivery = Delivery(key=key, channel=name, edition=EDITION, kind="email", recipient=row.email,
                            message=bytes(message), envelope_from=_envelope_from(config, sender, row.uid))
        # publish's own send step: the intent, the retries, the result, and a refusal of the
        # address recorded as a bounce.
        report = deliver_one(channel, delivery, ledger, bounces=config.bounces)
    finally:
        if open_channel is None:
            channel.close()
    if report.sent:
        return Confirmation(outcome="sent", key=key)
    after = ledger.get(key)
    if after is None or after.status in (Status.SENT, Status.SENDING):
        return Confirmation(outcome="already", key=key)       # another sender took the key first
    detail = report.error or after.last_error or "not sent"
    if after.status == Status.PENDING:
        # The channel stopped (unreachable, login refused): nothing retries a confirmation, so
        # the row says so; the reader's next sign-up makes a new one.
        ledger.fail(key, detail)
    return Confirmation(outcome="failed", key=key, detail=detail)


class ConfirmationSender:
    """Sends confirmations in the order they were asked for, on one thread of its own: at most
    one connection to the mail server however many sign-ups arrive, kept open while more wait.
    The thread starts with the first confirmation and ends after IDLE_SECONDS without one."""

    def __init__(self, config: Config, engine: Engine, secret: str, *, channel: str,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        self.config, self.engine, self.secret, self.channel = config, engine, secret, channel
        self.idle_seconds = idle_seconds
        self._queue: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, uid: str) -> None:
        """Send the confirmation now due for `uid`, soon; returns at once."""
        with self._lock:       # with the worker's exit check: no confirmation is left behind
            self._queue.put(uid)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="confirmations", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                uid = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            self._batch(uid)

    def _batch(self, uid: str | None) -> None:
        """Send `uid`'s confirmation and any that arrive meanwhile over one open channel."""
        channel: Channel | None = None
        try:
            channel = build_channel(self.config, self.channel)
        except PipelineError as exc:
            log.error("confirmation emails cannot be sent through %s: %s", self.channel, exc)
        try:
            while uid is not None:
                self._one(uid, channel)
                try:
                    uid = self._queue.get_nowait()
                except queue.Empty:
                    uid = None
        finally:
            if channel is not None:
                channel.close()

    def _one(self, uid: str, channel: Channel | None) -> None:
        try:
            done = send_confirmation(self.config, self.engine, self.secret, uid, channel=self.channel,
                                     open_channel=channel)
        except Exception:   # a bug or a broken database: the next confirmation may still go out
            log.exception("confirmation for subscriber %s: unexpected error", uid)
            return
        if done.outcome == "failed":
            log.error("confirmation for subscriber %s not sent: %s", uid, done.detail)
        else:
            log.info("confirmation for subscriber %s: %s", uid, done.outcome)
