"""Bounce and complaint messages -> events: real-world samples (tests/fixtures/bounces/), DSNs and
ARF reports made here as an MTA and a mailbox provider make them, and hostile messages.

The helpers that make messages are used by tests/test_bounce_mailbox.py too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.bounces import arf, dsn, verp
from pipeline.bounces.headers import parse
from pipeline.bounces.reader import MessageClass, interpret
from pipeline.config import Config, load_config
from pipeline.store.engine import engine_for
from pipeline.store.events import EventKind
from pipeline.store.subscribers import Subscriber, find, state_secret, token, upsert

SAMPLES = Path(__file__).resolve().parent / "fixtures" / "bounces"
BOUNCES = "bounces@news.example.com"
MAILTO = "unsubscribe@news.example.com"
SENDER = "RTR Wellness Center <news@example.com>"


# -- messages as mail systems make them ---------------------------------------------------------

def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def returned_headers(*, envelope: str, to: str, edition: str = "2020-09-01-ketamine-neurological-damage",
                     message_id: str = "<edition.1@news.example.com>") -> str:
    """The headers of one of our newsletters, as a report returns them."""
    return (f"Return-Path: <{envelope}>\n"
            f"From: {SENDER}\nTo: {to}\nSubject: Ketamine and the brain\n"
            f"Message-ID: {message_id}\nDate: Tue, 01 Sep 2020 13:00:00 +0000\n"
            f"List-Id: <news.example.com>\nFeedback-ID: {edition}:news:news.example.com\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n")


def make_dsn(*, to: str, recipient: str, status: str, action: str = "failed",
             diagnostic: str | None = None, message_id: str = "<dsn.1@mx.example.net>",
             delivered_to: bool = True, original_recipient: bool = True, returned: str | None = None,
             encode_status: bool = False) -> bytes:
    """A DSN as Postfix writes one (RFC 3464): the notice, the delivery status and the headers of
    the returned message. `to` is the envelope sender it goes back to (our VERP address)."""
    diagnostic = diagnostic if diagnostic is not None else \
        f"smtp; 550 {status} <{recipient}>: Recipient address rejected: User unknown"
    per_recipient = (f"Final-Recipient: rfc822; {recipient}\n"
                     + (f"Original-Recipient: rfc822;{recipient}\n" if original_recipient else "")
                     + f"Action: {action}\nStatus: {status}\nRemote-MTA: dns; mx.example.org\n"
                     + f"Diagnostic-Code: {diagnostic}\n")
    status_part = (f"Reporting-MTA: dns; mail.news.example.com\nX-Postfix-Queue-ID: 4Qx1Y2Z3\n"
                   f"X-Postfix-Sender: rfc822; {to}\nArrival-Date: Tue,  1 Sep 2020 13:00:01 +0000 (UTC)\n\n"
                   + per_recipient)
    if encode_status:
        import base64

        body = base64.encodebytes(_crlf(status_part)).decode()
        status_block = ("Content-Description: Delivery report\nContent-Type: message/delivery-status\n"
                        f"Content-Transfer-Encoding: base64\n\n{body}")
    else:
        status_block = ("Content-Description: Delivery report\nContent-Type: message/delivery-status\n\n"
                        + status_part)
    returned = returned if returned is not None else returned_headers(envelope=to, to=recipient)
    delivered = f"Delivered-To: {to}\n" if delivered_to else ""
    text = f"""\
Return-Path: <>
{delivered}Received: by mail.news.example.com (Postfix) id 4Qx1Y2Z3;
	Tue,  1 Sep 2020 13:00:02 +0000 (UTC)
Date: Tue,  1 Sep 2020 13:00:02 +0000 (UTC)
From: MAILER-DAEMON@mail.news.example.com (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {to}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4Qx1Y2Z3.1598965202/mail.news.example.com"
Message-Id: {message_id}

This is a MIME-encapsulated message.

--4Qx1Y2Z3.1598965202/mail.news.example.com
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.news.example.com.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{recipient}>: host mx.example.org[192.0.2.25] said: {diagnostic.split(";", 1)[-1].strip()}

--4Qx1Y2Z3.1598965202/mail.news.example.com
{status_block}
--4Qx1Y2Z3.1598965202/mail.news.example.com
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

{returned}
--4Qx1Y2Z3.1598965202/mail.news.example.com--
"""
    return _crlf(text)


def make_arf(*, original_mail_from: str | None, rcpt_to: str | None, to: str,
             feedback_type: str = "abuse", report_id: str = "<fbl.1@feedback.example.net>") -> bytes:
    """An RFC 5965 feedback report as a mailbox provider's feedback loop sends one, about one of
    our newsletters sent with `original_mail_from` as envelope sender to `to`."""
    fields = [f"Feedback-Type: {feedback_type}", "User-Agent: ExampleFBL/1.0", "Version: 1",
              "Arrival-Date: Tue, 01 Sep 2020 13:05:00 +0000", "Source-IP: 192.0.2.10",
              "Reported-Domain: news.example.com"]
    if original_mail_from:
        fields.append(f"Original-Mail-From: <{original_mail_from}>")
    if rcpt_to:
        fields.append(f"Original-Rcpt-To: <{rcpt_to}>")
    returned = returned_headers(envelope=original_mail_from or "news@example.com", to=to)
    text = f"""\
Delivered-To: {BOUNCES}
From: <feedback@feedback.example.net>
To: <{BOUNCES}>
Subject: FW: Ketamine and the brain
Date: Tue, 01 Sep 2020 13:06:00 +0000
Message-ID: {report_id}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP 192.0.2.10 on
Tue, 01 Sep 2020 13:05:00 +0000.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

{chr(10).join(fields)}

--part1_13d.2e68ed54_boundary
Content-Type: message/rfc822
Content-Disposition: inline

{returned}
Hello, this is our newsletter.

--part1_13d.2e68ed54_boundary--
"""
    return _crlf(text)


def make_unsubscribe_mail(*, subject: str, to: str = MAILTO, sender: str = "Reader <reader@example.org>",
                          body: str = "", message_id: str = "<unsub.1@mail.example.org>") -> bytes:
    """The mail a mail client sends for List-Unsubscribe's mailto: target."""
    return _crlf(f"From: {sender}\nTo: {to}\nDelivered-To: {to}\nSubject: {subject}\n"
                 f"Message-ID: {message_id}\nDate: Tue, 01 Sep 2020 14:00:00 +0000\n"
                 f"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n{body}\n")


# -- a project with a bounce address, the mailto address and subscribers ------------------------

def bounce_config(project: Path, **bounces: object) -> Config:
    """The project's config with `bounces.address` (VERP), `unsubscribe.mailto` and `bounces`."""
    path = project / "config.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["bounces"] = {"address": BOUNCES, **bounces}
    data.setdefault("unsubscribe", {})["mailto"] = MAILTO
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return load_config(path)


def subscribe(config: Config, *addresses: str) -> list[Subscriber]:
    engine = engine_for(config)
    out = []
    for address in addresses:
        upsert(engine, address)
        subscriber = find(engine, address=address)
        assert subscriber is not None
        out.append(subscriber)
    return out


def status(config: Config, address: str) -> str:
    subscriber = find(engine_for(config), address=address)
    assert subscriber is not None
    return subscriber.status


def unsubscribe_token(config: Config, subscriber: Subscriber) -> str:
    return token(subscriber.uid, subscriber.email, state_secret(engine_for(config)))


@pytest.fixture
def bconfig(project: Path) -> Config:
    return bounce_config(project, maildir="mail/bounces")


def read(config: Config, raw: bytes):  # type: ignore[no-untyped-def]
    engine = engine_for(config)
    return interpret(raw, config, engine, secret=state_secret(engine))


# -- real-world samples -------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("lhost-postfix-01.eml", {("kijitora@example.org", "5.1.1", EventKind.HARD)}),
    ("lhost-sendmail-02.eml", {("userunknown@example.org", "5.1.1", EventKind.HARD),
                               ("filtered@example.com", "5.2.1", EventKind.HARD)}),
    # Exim's plain-text bounce has no DSN part: the remote server's reply in the notice decides.
    ("lhost-exim-01.eml", {("kijitora@example.ed.jp", "5.7.0", EventKind.POLICY)}),
    ("lhost-gmail-01.eml", {("userunknown@example.jp", "5.1.1", EventKind.HARD)}),
    # qmail: a basic 550 and no enhanced code.
    ("lhost-qmail-01.eml", {("kijitora@example.ne.jp", None, EventKind.HARD)}),
])
def test_real_bounces_give_their_failed_recipients_and_status(name: str, expected: set) -> None:  # type: ignore[type-arg]
    bounce = dsn.parse(parse((SAMPLES / name).read_bytes()))
    assert {(f.recipient, f.status, f.kind) for f in bounce.failures} == expected
    assert all(f.action == "failed" for f in bounce.failures)


def test_a_real_delay_notice_is_no_failure() -> None:
    bounce = dsn.parse(parse((SAMPLES / "rfc3464-07.eml").read_bytes()))
    assert [(f.recipient, f.action, f.status, f.kind) for f in bounce.failures] == \
        [("kijitora@example.net", "delayed", "4.4.0", None)]


def test_a_real_postfix_dsn_names_the_address_it_came_back_to() -> None:
    bounce = dsn.parse(parse((SAMPLES / "lhost-postfix-01.eml").read_bytes()))
    assert bounce.returned_to[0] == "shironeko@mx.example.jp"     # Delivered-To / X-Original-To


def test_real_feedback_reports() -> None:
    yahoo = arf.parse(parse((SAMPLES / "arf-02.eml").read_bytes()))
    assert yahoo is not None and yahoo.is_complaint
    assert yahoo.recipients[0] == "this-local-part-does-not-exist-on-yahoo@yahoo.com"
    assert yahoo.returned_to[0] == "shironeko@example.com"
    dmarc = arf.parse(parse((SAMPLES / "arf-18.eml").read_bytes()))
    assert dmarc is not None and dmarc.feedback_type == "auth-failure" and not dmarc.is_complaint
    assert arf.parse(parse((SAMPLES / "lhost-postfix-01.eml").read_bytes())) is None


def test_real_samples_against_the_list(bconfig: Config) -> None:
    [known] = subscribe(bconfig, "userunknown@example.jp")
    gmail = read(bconfig, (SAMPLES / "lhost-gmail-01.eml").read_bytes())
    assert gmail.kind is MessageClass.HARD
    [event] = gmail.events
    assert (event.email, event.kind, event.source, event.edition) == \
        (known.email, EventKind.HARD, "dsn", None)
    assert event.event_id == "dsn:047d7bdca0c250c6c004fe72bd32@google.com:userunknown@example.jp"
    assert "5.1.1" in event.detail
    assert read(bconfig, (SAMPLES / "rfc3464-07.eml").read_bytes()).kind is MessageClass.IGNORED
    assert read(bconfig, (SAMPLES / "arf-18.eml").read_bytes()).kind is MessageClass.IGNORED
    plain = read(bconfig, (SAMPLES / "is-not-bounce-01.eml").read_bytes())
    assert (plain.kind, plain.events) == (MessageClass.NOT_UNDERSTOOD, ())
    yahoo = read(bconfig, (SAMPLES / "arf-02.eml").read_bytes())
    assert yahoo.kind is MessageClass.COMPLAINT
    assert yahoo.events[0].email == "this-local-part-does-not-exist-on-yahoo@yahoo.com"


# -- messages made as an MTA makes them ---------------------------------------------------------

def test_a_dsn_to_a_verp_address_names_the_subscriber_and_the_edition(bconfig: Config, run_cli) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import SEED_SLUG, send_through

    ada, _ = subscribe(bconfig, "ada@example.org", "bob@example.org")
    send_through(bconfig, name="outbox")             # the ledger now holds the seed edition for both
    # The report names an address the mail was forwarded to: VERP still finds Ada.
    raw = make_dsn(to=verp.envelope(BOUNCES, ada.uid, SEED_SLUG), recipient="ada@forward.example.net",
                   status="5.1.1")
    reading = read(bconfig, raw)
    [event] = reading.events
    assert reading.kind is MessageClass.HARD
    assert (event.email, event.edition, event.source) == ("ada@example.org", SEED_SLUG, "dsn")
    assert event.detail.startswith("5.1.1 smtp; 550 5.1.1 <ada@forward.example.net>")
    # An edition the ledger does not hold for her: the subscriber still, no edition.
    other = make_dsn(to=verp.envelope(BOUNCES, ada.uid, "another-edition"), recipient="ada@example.org",
                     status="5.1.1", message_id="<dsn.2@mx.example.net>")
    assert [(e.email, e.edition) for e in read(bconfig, other).events] == [("ada@example.org", None)]


@pytest.mark.parametrize(("status", "diagnostic", "kind", "code"), [
    ("5.1.1", None, EventKind.HARD, "5.1.1"),
    ("5.2.1", None, EventKind.HARD, "5.2.1"),
    ("5.2.2", "smtp; 552 5.2.2 Mailbox full", EventKind.SOFT, "5.2.2"),
    ("4.4.7", "smtp; 450 4.4.7 Delivery time expired", EventKind.SOFT, "4.4.7"),
    ("5.7.1", "smtp; 554 5.7.1 Message rejected as spam", EventKind.POLICY, "5.7.1"),
    # A generic Status is refined by the remote server's own code in the diagnostic.
    ("5.0.0", "smtp; 550 5.1.1 No such user", EventKind.HARD, "5.1.1"),
    ("5.0.0", "X-Postfix; unknown user", EventKind.SOFT, "5.0.0"),
])
def test_dsn_status_decides_the_kind(bconfig: Config, status: str, diagnostic: str | None,
                                     kind: EventKind, code: str) -> None:
    [ada] = subscribe(bconfig, "ada@example.org")
    raw = make_dsn(to=verp.envelope(BOUNCES, ada.uid, "e1"), recipient=ada.email, status=status,
                   diagnostic=diagnostic)
    [failure] = dsn.parse(parse(raw)).failures
    assert (failure.kind, failure.status) == (kind, code)
    [event] = read(bconfig, raw).events
    assert event.kind is kind


def test_an_encoded_delivery_status_part_is_read(bconfig: Config) -> None:
    raw = make_dsn(to="news@example.com", recipient="ada@example.org", status="5.1.1", encode_status=True)
    [failure] = dsn.parse(parse(raw)).failures
    assert (failure.recipient, failure.status, failure.kind) == ("ada@example.org", "5.1.1", EventKind.HARD)


def test_a_dsn_without_verp_maps_by_the_failed_recipient(bconfig: Config) -> None:
    subscribe(bconfig, "ada@example.org")
    raw = make_dsn(to="news@example.com", recipient="ADA@example.org", status="5.1.1", delivered_to=False,
                   returned=returned_headers(envelope="news@example.com", to="ada@example.org"))
    reading = read(bconfig, raw)
    assert [(e.email, e.kind, e.edition) for e in reading.events] == \
        [("ADA@example.org", EventKind.HARD, None)]


def test_a_delayed_dsn_to_a_verp_address_is_no_event(bconfig: Config) -> None:
    [ada] = subscribe(bconfig, "ada@example.org")
    raw = make_dsn(to=verp.envelope(BOUNCES, ada.uid, "e1"), recipient=ada.email, status="4.4.1",
                   action="delayed", diagnostic="smtp; 451 4.4.1 try again later")
    reading = read(bconfig, raw)
    assert (reading.kind, reading.events) == (MessageClass.IGNORED, ())


def test_an_unreadable_report_to_a_verp_address_uses_the_notice(bconfig: Config) -> None:
    [ada] = subscribe(bconfig, "ada@example.org")
    envelope = verp.envelope(BOUNCES, ada.uid, "e1")
    notice = _crlf(f"From: postmaster@mx.example.org\nTo: {envelope}\nSubject: failure notice\n"
                   "Message-ID: <odd.1@mx.example.org>\n\nSorry.\n550 5.1.1 mailbox unavailable\n")
    [event] = read(bconfig, notice).events
    assert (event.email, event.kind) == ("ada@example.org", EventKind.HARD)
    # An out-of-office reply to the envelope sender has no status code: nothing happens.
    vacation = _crlf(f"From: ada@example.org\nTo: {envelope}\nSubject: Out of office\n"
                     "Auto-Submitted: auto-replied\n\nI am away until Monday.\n")
    assert read(bconfig, vacation).kind is MessageClass.NOT_UNDERSTOOD


def test_an_arf_complaint_names_the_subscriber_through_verp(bconfig: Config) -> None:
    [ada] = subscribe(bconfig, "ada@example.org")
    raw = make_arf(original_mail_from=verp.envelope(BOUNCES, ada.uid, "e1"), rcpt_to=None, to="redacted")
    reading = read(bconfig, raw)
    [event] = reading.events
    assert reading.kind is MessageClass.COMPLAINT
    assert (event.email, event.kind, event.source) == ("ada@example.org", EventKind.COMPLAINT, "arf")
    assert event.detail == "feedback-type abuse from ExampleFBL/1.0 about <edition.1@news.example.com>"


def test_an_arf_complaint_without_verp_uses_original_rcpt_to(bconfig: Config) -> None:
    subscribe(bconfig, "ada@example.org")
    raw = make_arf(original_mail_from="news@example.com", rcpt_to="ada@example.org", to="ada@example.org")
    assert [e.email for e in read(bconfig, raw).events] == ["ada@example.org"]
    redacted = make_arf(original_mail_from="news@example.com", rcpt_to=None, to="undisclosed-recipients:;")
    assert read(bconfig, redacted).kind is MessageClass.UNKNOWN
    not_spam = make_arf(original_mail_from="news@example.com", rcpt_to="ada@example.org",
                        to="ada@example.org", feedback_type="not-spam")
    assert (read(bconfig, not_spam).kind, read(bconfig, not_spam).events) == (MessageClass.IGNORED, ())


def test_a_mail_to_the_unsubscribe_address_with_a_valid_token(bconfig: Config) -> None:
    [ada] = subscribe(bconfig, "ada@example.org")
    tok = unsubscribe_token(bconfig, ada)
    # From another address (a forward): the token is the proof.
    reading = read(bconfig, make_unsubscribe_mail(subject=f"unsubscribe {tok}", sender="x@elsewhere.example"))
    [event] = reading.events
    assert (event.email, event.kind, event.source) == ("ada@example.org", EventKind.UNSUBSCRIBE, "mailto")
    # A client that put the request in the body.
    body = read(bconfig, make_unsubscribe_mail(subject="Unsubscribe", body=f"unsubscribe {tok}\n"))
    assert [e.email for e in body.events] == ["ada@example.org"]


@pytest.mark.parametrize("subject", [
    "unsubscribe " + "0" * 32 + "." + "0" * 40,            # well formed, forged
    "unsubscribe",                                          # no token
])
def test_a_mail_to_the_unsubscribe_address_without_a_valid_token_changes_nothing(
        bconfig: Config, subject: str) -> None:
    [ada] = subscribe(bconfig, "ada@example.org")
    forged = subject.replace("0" * 32, ada.uid)
    reading = read(bconfig, make_unsubscribe_mail(subject=forged, sender=f"Ada <{ada.email}>"))
    assert (reading.kind, reading.events) == (MessageClass.REJECTED, ())


def test_a_token_sent_to_another_address_is_not_an_unsubscribe(bconfig: Config) -> None:
    [ada] = subscribe(bconfig, "ada@example.org")
    raw = make_unsubscribe_mail(subject=f"unsubscribe {unsubscribe_token(bconfig, ada)}",
                                to="news@example.com")
    assert read(bconfig, raw).kind is MessageClass.NOT_UNDERSTOOD


# -- hostile messages ---------------------------------------------------------------------------

def _hostile() -> dict[str, bytes]:
    dsn_bytes = make_dsn(to="news@example.com", recipient="ada@example.org", status="5.1.1")
    return {
        "binary garbage": hashlib.sha512(b"seed").digest() * 8000,
        "a 900 kB header": b"Subject: " + b"A" * 900_000 + b"\r\nTo: x@example.org\r\n\r\nbody",
        "60,000 headers": b"".join(b"X-H%d: v\r\n" % i for i in range(60_000)) + b"\r\nbody",
        "truncated MIME": dsn_bytes[: len(dsn_bytes) // 2],
        "5,000 nested multiparts": b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
                                   + b'--b\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n' * 5000,
        "broken encoded words": b"Subject: =?x-unknown?q?abc?= =?utf-8?b?!!!?=\r\n"
                                b"From: =?utf-8?q?=FF=FE?= <@>\r\nTo: <<<>>>\r\n\r\nx",
        "no From (a detector trips on it)": b"To: news@example.com\r\n\r\nhello",
        "empty": b"",
    }


@pytest.mark.parametrize("name", list(_hostile()))
def test_a_hostile_message_is_not_understood_never_a_crash(bconfig: Config, name: str) -> None:
    reading = read(bconfig, _hostile()[name])
    assert reading.kind in (MessageClass.NOT_UNDERSTOOD, MessageClass.HARD, MessageClass.UNKNOWN)
    if name != "truncated MIME":
        assert reading.events == ()


def test_every_truncation_of_a_dsn_reads_without_error(bconfig: Config) -> None:
    raw = make_dsn(to="news@example.com", recipient="ada@example.org", status="5.1.1")
    kinds = {read(bconfig, raw[:cut]).kind for cut in range(0, len(raw), 37)}
    assert kinds <= {MessageClass.NOT_UNDERSTOOD, MessageClass.HARD, MessageClass.SOFT}
    assert MessageClass.HARD in kinds                # once the status block is whole


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4000) | st.text(max_size=2000).map(lambda t: ("Content-Type: multipart/report; "
       "report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\n"
       + t).encode("utf-8", "surrogateescape")))
def test_fuzzed_messages_never_raise(bconfig: Config, raw: bytes) -> None:
    reading = read(bconfig, raw)
    assert isinstance(reading.kind, MessageClass)
