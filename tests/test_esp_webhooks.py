"""ESP webhooks over real HTTP: `pipeline serve`'s server (build_server, uvicorn in a thread) with
a real SQLite state, posted payloads shaped on the providers' documented examples and signed with
keys the tests generate. SNS's certificate download and subscription confirmation are the only
requests to the outside: respx intercepts them at the HTTP layer (it patches httpx's transport for
every thread, so the server thread's real httpx requests are caught and can be asserted)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from pipeline.bounces.esp.base import Incoming, WebhookError
from pipeline.bounces.esp.registry import PROVIDERS
from pipeline.config import Config, load_config
from pipeline.errors import ConfigError
from pipeline.store import events
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.events import EventKind
from pipeline.web.server import build_server
from tests.esp_keys import SendgridSigner, SnsSigner, basic_auth, mailgun_signature
from tests.servers import AppServers
from tests.smtp_sink import free_port

ADA, BOB = "ada@example.com", "bob@example.org"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-newsletter-events"
EDITION = "2020-09-01-ketamine-neurological-damage"
FEEDBACK_ID = f"{EDITION}:newsletter:www.rtrwellnesscenter.com"
POSTMARK_USER, POSTMARK_PASSWORD = "postmark-hooks", "correct horse battery staple"
MAILGUN_KEY = "key-" + "7f3c" * 8


# -- the server and its state -------------------------------------------------------------------

@pytest.fixture(scope="module")
def sns() -> SnsSigner:
    return SnsSigner()


@pytest.fixture(scope="module")
def sendgrid() -> SendgridSigner:
    return SendgridSigner()


def _with_webhooks(project: Path, monkeypatch: pytest.MonkeyPatch, public_key: str,
                   ses: str = f"{{topic_arns: [\"{TOPIC}\"]}}") -> Config:
    """The project's config with every provider configured, the secrets in the environment."""
    monkeypatch.setenv("POSTMARK_WEBHOOK_PASSWORD", POSTMARK_PASSWORD)
    monkeypatch.setenv("MAILGUN_SIGNING_KEY", MAILGUN_KEY)
    monkeypatch.setenv("SENDGRID_PUBLIC_KEY", public_key)
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + f"""
bounces:
  soft_limit: 3
  soft_days: 30
  webhooks:
    ses: {ses}
    postmark:
      username: {POSTMARK_USER}
      password: ${{POSTMARK_WEBHOOK_PASSWORD}}
    mailgun:
      signing_key: ${{MAILGUN_SIGNING_KEY}}
    sendgrid:
      public_key: ${{SENDGRID_PUBLIC_KEY}}
""", encoding="utf-8")
    return load_config(path)


@pytest.fixture
def hooked(project, monkeypatch, sendgrid) -> Config:
    return _with_webhooks(project, monkeypatch, sendgrid.public_key)


@pytest.fixture
def outside(sns) -> Iterator[respx.MockRouter]:
    """Every httpx request intercepted: loopback (our server) passes through, SNS's certificate
    is served, and anything else not routed fails the request."""
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.get(sns.cert_url, name="cert").respond(200, content=sns.pem)
        yield mock


@pytest.fixture
def serve(outside) -> Iterator[Callable[[Config], str]]:
    servers = AppServers()
    yield lambda config: servers.run(build_server(config, port=free_port()))
    servers.stop()


@pytest.fixture
def engine(hooked):
    engine = engine_for(hooked)
    for address, name in ((ADA, "Ada"), (BOB, "Bob")):
        assert store.upsert(engine, address, name) == "added"
    return engine


@pytest.fixture
def client(serve, hooked, engine) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve(hooked), timeout=10) as c:
        yield c


def statuses(engine) -> dict[str, str]:
    return {s.email: s.status for s in store.iter_subscribers(engine)}


def history(engine, address: str) -> list[dict[str, Any]]:
    return events.history(engine, address)


def now() -> datetime:
    return datetime.now(UTC)


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


# -- Amazon SES through SNS ---------------------------------------------------------------------

def ses_bounce(address: str, *, bounce_type: str = "Permanent", sub_type: str = "General",
               status: str | None = "5.1.1", diagnostic: str | None = None) -> dict[str, Any]:
    """An SES bounce notification, as in SES's documentation (notification-examples)."""
    recipient: dict[str, Any] = {"emailAddress": address, "action": "failed"}
    if status:
        recipient["status"] = status
    recipient["diagnosticCode"] = diagnostic or f"smtp; 550 {status or '5.1.1'} <{address}>... User unknown"
    return {
        "notificationType": "Bounce",
        "bounce": {"bounceType": bounce_type, "bounceSubType": sub_type,
                   "reportingMTA": "dns; email.example.com", "bouncedRecipients": [recipient],
                   "timestamp": iso(now()),
                   "feedbackId": f"0100018{secrets.token_hex(6)}-{uuid.uuid4()}-000000",
                   "remoteMtaIp": "192.0.2.25"},
        "mail": _ses_mail(address),
    }


def ses_complaint(address: str, feedback_type: str = "abuse") -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {"userAgent": "AnyCompany Feedback Loop (V0.01)",
                      "complainedRecipients": [{"emailAddress": address}],
                      "complaintFeedbackType": feedback_type, "arrivalDate": iso(now()),
                      "timestamp": iso(now()), "feedbackId": f"0100018{secrets.token_hex(6)}-{uuid.uuid4()}"},
        "mail": _ses_mail(address),
    }


def _ses_mail(address: str) -> dict[str, Any]:
    return {"timestamp": iso(now() - timedelta(minutes=2)), "source": "news@example.com",
            "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/example.com",
            "sendingAccountId": "123456789012", "messageId": f"0100018{secrets.token_hex(6)}-000000",
            "destination": [address], "headersTruncated": False,
            "headers": [{"name": "From", "value": "RTR Wellness Center <news@example.com>"},
                        {"name": "To", "value": address},
                        {"name": "Subject", "value": "Ketamine and the brain"},
                        {"name": "Feedback-ID", "value": FEEDBACK_ID}],
            "commonHeaders": {"from": ["RTR Wellness Center <news@example.com>"], "to": [address],
                              "subject": "Ketamine and the brain"}}


def sns_notification(ses_event: dict[str, Any] | str, *, timestamp: datetime | None = None,
                     topic: str = TOPIC) -> dict[str, Any]:
    return {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": topic,
            "Subject": "Amazon SES Email Event Notification",
            "Message": ses_event if isinstance(ses_event, str) else json.dumps(ses_event),
            "Timestamp": iso(timestamp or now()),
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"
                              f"&SubscriptionArn={TOPIC}:{uuid.uuid4()}"}


def post_sns(client: httpx.Client, message: dict[str, Any]) -> httpx.Response:
    """POST as SNS does: JSON sent as text/plain, with its x-amz-sns-* headers."""
    return client.post("/webhooks/ses", content=json.dumps(message), headers={
        "Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": message["Type"],
        "x-amz-sns-message-id": message["MessageId"], "x-amz-sns-topic-arn": message["TopicArn"],
        "User-Agent": "Amazon Simple Notification Service Agent"})


def test_ses_hard_bounce_marks_the_subscriber_bounced_with_its_edition(client, engine, sns, outside):
    response = post_sns(client, sns.sign(sns_notification(ses_bounce(ADA))))
    assert response.status_code == 200, response.text
    assert response.json() == {"events": 1, "recorded": 1, "duplicates": 0, "unknown": 0, "ignored": 0}
    assert statuses(engine) == {ADA: "bounced", BOB: "active"}
    [event] = history(engine, ADA)
    assert (event["kind"], event["source"], event["edition"]) == ("hard", "ses", EDITION)
    assert "5.1.1" in event["detail"]
    assert outside["cert"].call_count == 1


def test_ses_signature_version_2_complaint_marks_complained(client, engine, sns):
    response = post_sns(client, sns.sign(sns_notification(ses_complaint(BOB)), version="2"))
    assert response.status_code == 200, response.text
    assert statuses(engine) == {ADA: "active", BOB: "complained"}


def test_ses_not_spam_feedback_is_no_complaint(client, engine, sns):
    response = post_sns(client, sns.sign(sns_notification(ses_complaint(BOB, "not-spam"))))
    assert response.json()["ignored"] == 1
    assert statuses(engine) == {ADA: "active", BOB: "active"}


def test_ses_soft_bounces_count_until_the_limit(client, engine, sns, outside):
    def transient() -> dict[str, Any]:
        return ses_bounce(ADA, bounce_type="Transient", sub_type="MailboxFull", status="4.2.2",
                          diagnostic="smtp; 452 4.2.2 The email account that you tried to reach is over "
                                     "quota")

    for expected in ("active", "active", "bounced"):
        assert post_sns(client, sns.sign(sns_notification(transient()))).status_code == 200
        assert statuses(engine)[ADA] == expected
    assert [e["kind"] for e in history(engine, ADA)] == ["soft"] * 3
    assert outside["cert"].call_count == 1            # fetched once, then kept


def test_ses_policy_rejection_keeps_the_subscriber(client, engine, sns):
    bounce = ses_bounce(ADA, status="5.7.1", diagnostic="smtp; 550 5.7.1 Message rejected as spam")
    assert post_sns(client, sns.sign(sns_notification(bounce))).status_code == 200
    assert statuses(engine)[ADA] == "active"
    assert [e["kind"] for e in history(engine, ADA)] == ["policy"]


def test_ses_same_notification_twice_counts_once(client, engine, sns):
    message = sns.sign(sns_notification(ses_bounce(ADA, bounce_type="Transient", status="4.4.7")))
    assert post_sns(client, message).json()["recorded"] == 1
    assert post_sns(client, message).json()["duplicates"] == 1
    assert len(history(engine, ADA)) == 1


def test_ses_tampered_message_is_refused_and_changes_nothing(client, engine, sns):
    message = sns.sign(sns_notification(ses_bounce(BOB)))
    message["Message"] = message["Message"].replace(BOB, ADA)        # signed for Bob, now says Ada
    response = post_sns(client, message)
    assert response.status_code == 403
    assert "signature" in response.json()["error"]
    assert statuses(engine) == {ADA: "active", BOB: "active"}
    assert history(engine, ADA) == history(engine, BOB) == []


def test_ses_signature_by_another_key_is_refused(client, engine, sns):
    other = SnsSigner()
    response = post_sns(client, other.sign(sns_notification(ses_bounce(ADA)), cert_url=sns.cert_url))
    assert response.status_code == 403
    assert statuses(engine)[ADA] == "active"


def test_ses_old_timestamp_is_refused_as_a_replay(client, engine, sns):
    message = sns.sign(sns_notification(ses_bounce(ADA), timestamp=now() - timedelta(hours=2)))
    response = post_sns(client, message)
    assert response.status_code == 400
    assert "replay" in response.json()["error"]
    assert statuses(engine)[ADA] == "active"


@pytest.mark.parametrize("cert_url", [
    "https://sns.us-east-1.amazonaws.com.attacker.example/SimpleNotificationService-1.pem",
    "https://attacker.example/sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
    "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
    "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.txt",
])
def test_ses_certificate_elsewhere_is_refused_without_fetching(client, engine, sns, outside, cert_url):
    # Served the right certificate, so only the URL check can refuse it.
    elsewhere = outside.get(cert_url).respond(200, content=sns.pem)
    response = post_sns(client, sns.sign(sns_notification(ses_bounce(ADA)), cert_url=cert_url))
    assert response.status_code == 403
    assert "SigningCertURL" in response.json()["error"]
    assert elsewhere.call_count == 0 and outside["cert"].call_count == 0
    assert statuses(engine)[ADA] == "active"


def test_ses_topic_not_listed_is_refused(client, engine, sns, outside):
    message = sns.sign(sns_notification(ses_bounce(ADA), topic="arn:aws:sns:us-east-1:999999999999:other"))
    assert post_sns(client, message).status_code == 403
    assert outside["cert"].call_count == 0
    assert statuses(engine)[ADA] == "active"


def test_ses_subscription_confirmation_gets_the_subscribe_url_once(client, engine, sns, outside):
    token = secrets.token_hex(64)
    subscribe_url = ("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
                     f"&TopicArn={TOPIC}&Token={token}")
    confirm = outside.get(subscribe_url).respond(200, text="<ConfirmSubscriptionResponse/>")
    message = sns.sign({
        "Type": "SubscriptionConfirmation", "MessageId": str(uuid.uuid4()), "Token": token, "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the subscription, "
                   "visit the SubscribeURL included in this message.",
        "SubscribeURL": subscribe_url, "Timestamp": iso(now())})
    response = post_sns(client, message)
    assert response.status_code == 200, response.text
    assert response.json()["note"] == "subscription confirmed"
    assert confirm.call_count == 1
    assert statuses(engine) == {ADA: "active", BOB: "active"}


def test_ses_subscription_confirmation_to_elsewhere_is_not_followed(client, sns, outside):
    subscribe_url = "https://attacker.example/?Action=ConfirmSubscription"
    followed = outside.get(subscribe_url).respond(200)
    message = sns.sign({
        "Type": "SubscriptionConfirmation", "MessageId": str(uuid.uuid4()), "Token": "abc", "TopicArn": TOPIC,
        "Message": "confirm", "SubscribeURL": subscribe_url, "Timestamp": iso(now())})
    assert post_sns(client, message).status_code == 403
    assert followed.call_count == 0


def test_ses_unknown_address_is_counted_and_not_logged(client, engine, sns, caplog):
    caplog.set_level(logging.INFO)
    response = post_sns(client, sns.sign(sns_notification(ses_bounce("carol.secret@example.net"))))
    assert response.status_code == 200
    assert response.json()["unknown"] == 1
    assert statuses(engine) == {ADA: "active", BOB: "active"}
    assert "example.net" in caplog.text and "carol.secret" not in caplog.text


def test_ses_delivery_and_validation_messages_are_ignored(client, engine, sns):
    delivery = {"eventType": "Delivery", "mail": _ses_mail(ADA),
                "delivery": {"timestamp": iso(now()), "recipients": [ADA], "smtpResponse": "250 ok"}}
    for body in (delivery, "Successfully validated SNS topic for Amazon SES event publishing."):
        response = post_sns(client, sns.sign(sns_notification(body)))
        assert response.json() == {"events": 0, "recorded": 0, "duplicates": 0, "unknown": 0, "ignored": 1}
    assert history(engine, ADA) == []


def test_ses_malformed_json_gets_a_one_line_reason(client, engine):
    response = client.post("/webhooks/ses", content=b'{"Type": "Notification",',
                           headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("the body is not JSON (")
    assert "\n" not in response.json()["error"]


def test_ses_needs_its_topic_list(project, monkeypatch, sendgrid):
    """Anyone can make an SNS topic and subscribe this URL to it: the topic list is required."""
    with pytest.raises(ConfigError, match=r"bounces\.webhooks\.ses\.topic_arns: required key is missing"):
        _with_webhooks(project, monkeypatch, sendgrid.public_key, ses="{}")
    with pytest.raises(ConfigError, match=r"bounces\.webhooks\.ses\.topic_arns: .*at least 1 item"):
        _with_webhooks(project, monkeypatch, sendgrid.public_key, ses="{topic_arns: []}")
    with pytest.raises(ConfigError, match=r"bounces\.webhooks\.ses\.topic_arns\.0: .*should match"):
        _with_webhooks(project, monkeypatch, sendgrid.public_key, ses='{topic_arns: ["my-topic"]}')


# -- Postmark -----------------------------------------------------------------------------------

POSTMARK_AUTH = basic_auth(POSTMARK_USER, POSTMARK_PASSWORD)


def postmark_bounce(address: str, bounce_type: str = "HardBounce", **extra: Any) -> dict[str, Any]:
    """A Postmark bounce webhook, as in Postmark's documentation."""
    return {"RecordType": "Bounce", "ID": secrets.randbelow(10**10), "Type": bounce_type, "TypeCode": 1,
            "Name": "Hard bounce", "Tag": "newsletter", "MessageID": str(uuid.uuid4()), "ServerID": 23,
            "MessageStream": "broadcast",
            "Description": "The server was unable to deliver your message "
                           "(ex: unknown user, mailbox not found).",
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            "Email": address, "From": "news@example.com", "BouncedAt": now().isoformat(),
            "DumpAvailable": True, "Inactive": True, "CanActivate": True, "Subject": "Ketamine and the brain",
            "Metadata": {"edition": EDITION}, **extra}


def post_postmark(client: httpx.Client, record: dict[str, Any], auth: dict[str, str] | None = None
                  ) -> httpx.Response:
    return client.post("/webhooks/postmark", json=record, headers=POSTMARK_AUTH if auth is None else auth)


def test_postmark_hard_bounce_marks_bounced(client, engine):
    response = post_postmark(client, postmark_bounce(ADA))
    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == 1
    assert statuses(engine) == {ADA: "bounced", BOB: "active"}
    [event] = history(engine, ADA)
    assert (event["kind"], event["source"], event["edition"]) == ("hard", "postmark", EDITION)


def test_postmark_soft_bounces_count_until_the_limit(client, engine):
    for expected in ("active", "active", "bounced"):
        assert post_postmark(client, postmark_bounce(ADA, "SoftBounce", TypeCode=4096)).status_code == 200
        assert statuses(engine)[ADA] == expected


def test_postmark_spam_complaint_marks_complained(client, engine):
    complaint = postmark_bounce(BOB, "SpamComplaint", RecordType="SpamComplaint", TypeCode=512,
                                Details="Test spam complaint details")
    assert post_postmark(client, complaint).status_code == 200
    assert statuses(engine) == {ADA: "active", BOB: "complained"}


def test_postmark_subscription_change_unsubscribes(client, engine):
    change = {"RecordType": "SubscriptionChange", "MessageID": str(uuid.uuid4()), "ServerID": 23,
              "MessageStream": "broadcast", "ChangedAt": now().isoformat(), "Recipient": BOB,
              "Origin": "Recipient", "SuppressSending": True, "SuppressionReason": "ManualSuppression",
              "Tag": "newsletter", "Metadata": {"edition": EDITION}}
    assert post_postmark(client, change).status_code == 200
    assert post_postmark(client, {**change, "SuppressSending": False,
                                  "ChangedAt": (now() + timedelta(seconds=1)).isoformat()}).status_code == 200
    assert statuses(engine) == {ADA: "active", BOB: "unsubscribed"}       # a reactivation brings no one back


def test_postmark_same_bounce_twice_counts_once(client, engine):
    bounce = postmark_bounce(ADA, "Transient", TypeCode=2)
    assert post_postmark(client, bounce).json()["recorded"] == 1
    assert post_postmark(client, bounce).json()["duplicates"] == 1
    assert len(history(engine, ADA)) == 1


@pytest.mark.parametrize("auth", [
    {},
    basic_auth(POSTMARK_USER, "wrong password"),
    basic_auth("someone", POSTMARK_PASSWORD),
    {"Authorization": "Bearer " + POSTMARK_PASSWORD},
    {"Authorization": "Basic not-base64!"},
])
def test_postmark_wrong_credentials_get_401_and_change_nothing(client, engine, auth):
    response = post_postmark(client, postmark_bounce(ADA), auth=auth)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert POSTMARK_PASSWORD not in response.text
    assert statuses(engine)[ADA] == "active" and history(engine, ADA) == []


def test_postmark_delivery_is_ignored(client, engine):
    delivery = {"RecordType": "Delivery", "ServerID": 23, "MessageStream": "broadcast",
                "MessageID": str(uuid.uuid4()), "Recipient": ADA, "Tag": "newsletter",
                "DeliveredAt": now().isoformat(), "Details": "Test delivery webhook details", "Metadata": {}}
    assert post_postmark(client, delivery).json()["ignored"] == 1
    assert history(engine, ADA) == []


# -- Mailgun ------------------------------------------------------------------------------------

def mailgun_event(event: str, address: str, message_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """Mailgun event-data, as in Mailgun's webhook payload examples."""
    return {"event": event, "id": secrets.token_urlsafe(16), "timestamp": now().timestamp(),
            "log-level": "error" if event == "failed" else "warn", "recipient": address,
            "recipient-domain": address.rpartition("@")[2], "tags": ["newsletter"],
            "envelope": {"sender": "bounces@mg.example.com", "transport": "smtp", "targets": address},
            "message": {"headers": {"to": address, "from": "RTR Wellness Center <news@example.com>",
                                    "subject": "Ketamine and the brain",
                                    "message-id": message_id or f"{uuid.uuid4().hex}@mg.example.com"},
                        "attachments": [], "size": 20817},
            "flags": {"is-routed": False, "is-authenticated": True, "is-test-mode": False},
            "user-variables": {"edition": EDITION}, **extra}


def mailgun_failure(address: str, severity: str, code: int, text: str, *, reason: str | None = None,
                    message_id: str | None = None) -> dict[str, Any]:
    return mailgun_event("failed", address, message_id, severity=severity,
                         reason=reason or ("bounce" if severity == "permanent" else "generic"),
                         **{"delivery-status": {"tls": True, "mx-host": "mx.example.com", "attempt-no": 1,
                                                "description": "", "session-seconds": 0.48, "code": code,
                                                "message": text, "certificate-verified": True}})


def post_mailgun(client: httpx.Client, data: dict[str, Any], *, at: datetime | None = None,
                 key: str = MAILGUN_KEY, signature: dict[str, str] | None = None) -> httpx.Response:
    signature = signature or mailgun_signature(key, int((at or now()).timestamp()))
    return client.post("/webhooks/mailgun", json={"signature": signature, "event-data": data})


def test_mailgun_permanent_failure_marks_bounced(client, engine):
    failure = mailgun_failure(ADA, "permanent", 550, "5.1.1 The email account that you tried to reach does "
                              "not exist. Please try\n5.1.1 double-checking the recipient's email address")
    response = post_mailgun(client, failure)
    assert response.status_code == 200, response.text
    assert statuses(engine) == {ADA: "bounced", BOB: "active"}
    [event] = history(engine, ADA)
    assert (event["kind"], event["source"], event["edition"]) == ("hard", "mailgun", EDITION)


def test_mailgun_temporary_failures_count_once_per_message(client, engine):
    greylisted = mailgun_failure(ADA, "temporary", 450, "Recipient address rejected: Greylisted",
                                 reason="greylisted")
    assert post_mailgun(client, greylisted).json()["ignored"] == 1
    first = f"{uuid.uuid4().hex}@mg.example.com"
    for _attempt in range(2):       # Mailgun reports each failed attempt at the same message
        full = mailgun_failure(ADA, "temporary", 452, "4.2.2 The email account is over quota",
                               message_id=first)
        assert post_mailgun(client, full).status_code == 200
    assert statuses(engine)[ADA] == "active"
    assert len(history(engine, ADA)) == 1
    for expected in ("active", "bounced"):                    # the second and third message
        soft = mailgun_failure(ADA, "temporary", 452, "4.2.2 over quota")
        assert post_mailgun(client, soft).status_code == 200
        assert statuses(engine)[ADA] == expected


def test_mailgun_complaint_and_unsubscribe(client, engine):
    assert post_mailgun(client, mailgun_event("complained", ADA)).status_code == 200
    assert post_mailgun(client, mailgun_event("unsubscribed", BOB)).status_code == 200
    assert statuses(engine) == {ADA: "complained", BOB: "unsubscribed"}


def test_mailgun_wrong_signature_is_refused(client, engine):
    failure = mailgun_failure(ADA, "permanent", 550, "5.1.1 no such user")
    response = post_mailgun(client, failure, key="key-not-the-one-configured")
    assert response.status_code == 403
    assert MAILGUN_KEY not in response.text
    assert statuses(engine)[ADA] == "active" and history(engine, ADA) == []


def test_mailgun_old_timestamp_is_refused(client, engine):
    failure = mailgun_failure(ADA, "permanent", 550, "5.1.1 no such user")
    response = post_mailgun(client, failure, at=now() - timedelta(minutes=20))
    assert response.status_code == 400
    assert "replay" in response.json()["error"]
    assert statuses(engine)[ADA] == "active"


def test_mailgun_replayed_token_is_refused(client, engine):
    signature = mailgun_signature(MAILGUN_KEY, int(now().timestamp()))
    soft = mailgun_failure(ADA, "temporary", 452, "4.2.2 over quota")
    assert post_mailgun(client, soft, signature=signature).status_code == 200
    other = mailgun_failure(ADA, "temporary", 452, "4.2.2 over quota")
    response = post_mailgun(client, other, signature=signature)
    assert response.status_code == 400
    assert "already used" in response.json()["error"]
    assert len(history(engine, ADA)) == 1


def test_mailgun_same_event_signed_twice_counts_once(client, engine):
    failure = mailgun_failure(ADA, "permanent", 554, "5.7.1 Message rejected by policy")
    assert post_mailgun(client, failure).json()["recorded"] == 1
    assert post_mailgun(client, failure).json()["duplicates"] == 1       # a retry: a new token
    assert [e["kind"] for e in history(engine, ADA)] == ["policy"]
    assert statuses(engine)[ADA] == "active"


# -- SendGrid -----------------------------------------------------------------------------------

def sendgrid_event(event: str, address: str, **extra: Any) -> dict[str, Any]:
    """A SendGrid event, as in SendGrid's event webhook reference; `edition` is a custom argument."""
    return {"email": address, "timestamp": int(now().timestamp()),
            "smtp-id": f"<{secrets.token_urlsafe(12)}@ismtpd0006p1sjc2.sendgrid.net>", "event": event,
            "category": ["newsletter"], "sg_event_id": secrets.token_urlsafe(16),
            "sg_message_id": f"{secrets.token_urlsafe(16)}.filter0001.16648.5515E0B88.0",
            "edition": EDITION, **extra}


def post_sendgrid(client: httpx.Client, signer: SendgridSigner, batch: list[dict[str, Any]], *,
                  at: datetime | None = None, body: bytes | None = None) -> httpx.Response:
    signed = json.dumps(batch).encode()
    headers = signer.headers(signed, int((at or now()).timestamp()))
    return client.post("/webhooks/sendgrid", content=signed if body is None else body, headers=headers)


def test_sendgrid_batch_bounce_complaint_and_deliveries(client, engine, sendgrid):
    batch = [sendgrid_event("delivered", ADA, response="250 OK"),
             sendgrid_event("bounce", ADA, type="bounce", status="5.1.1",
                            reason="550 5.1.1 The email account that you tried to reach does not exist."),
             sendgrid_event("spamreport", BOB),
             sendgrid_event("deferred", BOB, response="400 try again later", attempt="5")]
    response = post_sendgrid(client, sendgrid, batch)
    assert response.status_code == 200, response.text
    assert response.json() == {"events": 2, "recorded": 2, "duplicates": 0, "unknown": 0, "ignored": 2}
    assert statuses(engine) == {ADA: "bounced", BOB: "complained"}
    [event] = history(engine, ADA)
    assert (event["kind"], event["source"], event["edition"]) == ("hard", "sendgrid", EDITION)


def test_sendgrid_blocked_is_a_policy_refusal(client, engine, sendgrid):
    blocked = sendgrid_event("bounce", ADA, type="blocked", status="5.7.1",
                             reason="550 5.7.1 Our system has detected an unusual rate of unsolicited mail")
    assert post_sendgrid(client, sendgrid, [blocked]).status_code == 200
    assert statuses(engine)[ADA] == "active"
    assert [e["kind"] for e in history(engine, ADA)] == ["policy"]


def test_sendgrid_dropped_tells_what_the_address_did(client, engine, sendgrid):
    batch = [sendgrid_event("dropped", ADA, reason="Unsubscribed Address"),
             sendgrid_event("dropped", BOB, reason="Bounced Address", status="5.0.0")]
    assert post_sendgrid(client, sendgrid, batch).status_code == 200
    assert statuses(engine) == {ADA: "unsubscribed", BOB: "bounced"}


def test_sendgrid_soft_bounces_count_until_the_limit(client, engine, sendgrid):
    for expected in ("active", "active", "bounced"):
        soft = sendgrid_event("bounce", ADA, type="bounce", status="4.2.2", reason="452 4.2.2 Mailbox full")
        assert post_sendgrid(client, sendgrid, [soft]).status_code == 200
        assert statuses(engine)[ADA] == expected


def test_sendgrid_same_event_twice_counts_once(client, engine, sendgrid):
    bounce = sendgrid_event("bounce", ADA, type="bounce", status="4.4.1", reason="451 4.4.1 timeout")
    assert post_sendgrid(client, sendgrid, [bounce]).json()["recorded"] == 1
    assert post_sendgrid(client, sendgrid, [bounce]).json()["duplicates"] == 1
    assert len(history(engine, ADA)) == 1


def test_sendgrid_bad_signature_is_refused(client, engine, sendgrid):
    batch = [sendgrid_event("bounce", BOB, type="bounce", status="5.1.1", reason="550 5.1.1 unknown")]
    forged = json.dumps([{**batch[0], "email": ADA}]).encode()
    assert post_sendgrid(client, sendgrid, batch, body=forged).status_code == 403
    assert post_sendgrid(client, SendgridSigner(), batch).status_code == 403     # another key
    unsigned = client.post("/webhooks/sendgrid", json=batch)
    assert unsigned.status_code == 403
    assert statuses(engine) == {ADA: "active", BOB: "active"}
    assert history(engine, ADA) == history(engine, BOB) == []


def test_sendgrid_old_timestamp_is_refused(client, engine, sendgrid):
    bounce = sendgrid_event("bounce", ADA, type="bounce", status="5.1.1", reason="550 5.1.1 unknown")
    response = post_sendgrid(client, sendgrid, [bounce], at=now() - timedelta(hours=2))
    assert response.status_code == 400
    assert "replay" in response.json()["error"]
    assert statuses(engine)[ADA] == "active"


def test_sendgrid_key_in_pem_works(project, monkeypatch, sendgrid, serve):
    config = _with_webhooks(project, monkeypatch, sendgrid.public_pem)
    engine = engine_for(config)
    store.upsert(engine, ADA)
    with httpx.Client(base_url=serve(config), timeout=10) as c:
        bounce = sendgrid_event("bounce", ADA, type="bounce", status="5.1.1", reason="550 5.1.1 unknown")
        assert post_sendgrid(c, sendgrid, [bounce]).status_code == 200
    assert statuses(engine)[ADA] == "bounced"


def test_sendgrid_key_that_is_no_key_names_the_setting(project, monkeypatch):
    config = _with_webhooks(project, monkeypatch, "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEnotakey")
    with pytest.raises(ConfigError, match=r"config\.yaml:\d+: bounces\.webhooks\.sendgrid\.public_key: "
                                          r"not an ECDSA P-256 public key") as caught:
        build_server(config, port=free_port())
    assert "\n" not in str(caught.value)


def test_check_finds_a_sendgrid_key_that_is_no_key(project, monkeypatch, run_cli):
    bad = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEnotakey"
    _with_webhooks(project, monkeypatch, bad)
    env = {"POSTMARK_WEBHOOK_PASSWORD": POSTMARK_PASSWORD, "MAILGUN_SIGNING_KEY": MAILGUN_KEY,
           "SENDGRID_PUBLIC_KEY": bad}
    result = run_cli("check", cwd=project, env=env)
    assert result.returncode == 1
    expected = r"config\.yaml:\d+: bounces\.webhooks\.sendgrid\.public_key: not an ECDSA P-256 public"
    assert re.search(expected, result.stderr + result.stdout), result.stderr
    assert "Traceback" not in result.stderr


# -- every provider -----------------------------------------------------------------------------

def test_unconfigured_providers_answer_404(serve, config):
    with httpx.Client(base_url=serve(config), timeout=10) as c:
        for name in ("ses", "postmark", "mailgun", "sendgrid"):
            assert c.post(f"/webhooks/{name}", json={}).status_code == 404


def test_a_body_over_the_limit_is_refused_while_reading(client, engine):
    big = json.dumps(postmark_bounce(ADA, Content="x" * 1_100_000)).encode()
    assert post_postmark(client, json.loads(big)).status_code == 413

    def chunks() -> Iterator[bytes]:            # no Content-Length: the cap holds while reading
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]

    response = client.post("/webhooks/postmark", content=chunks(), headers=POSTMARK_AUTH)
    assert response.status_code == 413
    assert statuses(engine)[ADA] == "active" and history(engine, ADA) == []


def test_only_post_is_served(client):
    assert client.get("/webhooks/postmark", headers=POSTMARK_AUTH).status_code == 405


# -- whatever a payload holds, an answer and never a crash ----------------------------------------

_WORDS = ["Bounce", "Complaint", "Delivery", "Permanent", "Transient", "Undetermined", "General",
          "HardBounce", "SoftBounce", "SpamComplaint", "SpamNotification", "Blocked", "SubscriptionChange",
          "ManualSuppression", "failed", "permanent", "temporary", "complained", "unsubscribed", "delivered",
          "bounce", "blocked", "dropped", "spamreport", "deferred", "Bounced Address", "suppress-bounce",
          "greylisted", "abuse", "not-spam", "5.1.1", "4.2.2", "5.7.1", "2.0.0", "550 5.1.1 unknown", "452",
          ADA, " <Ada@Example.com> ", "not an address", "@", "a@", "Feedback-ID", FEEDBACK_ID, "::", "1e400",
          "2024-02-30T00:00:00Z", "1700000000"]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.sampled_from(_WORDS)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12)
_ANY = st.sampled_from(_WORDS) | _JSON


def _shaped(*names: str, **inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a JSON object with the fields `inner` (shaped values) and some of `names` (any value);
    sometimes any other JSON value instead."""
    shaped = st.fixed_dictionaries(inner, optional=dict.fromkeys(names, _ANY))
    return st.one_of(shaped, shaped, shaped, _JSON)


def _listed(item: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    items = st.lists(item, min_size=1, max_size=3)
    return st.one_of(items, items, items, st.lists(_JSON, max_size=2), _JSON)


def _one(*values: Any) -> st.SearchStrategy[Any]:
    """One of `values` (the ones a provider's code tells apart), or any JSON value."""
    return st.sampled_from(values) | _ANY


_EMAIL = _one(ADA, BOB, " <Ada@Example.com> ")
_RECIPIENTS = _listed(_shaped("status", "diagnosticCode", emailAddress=_EMAIL))
_SHAPES: dict[str, st.SearchStrategy[Any]] = {
    "ses": _shaped("bounceSubType", notificationType=_one("Bounce", "Complaint"), eventType=_one("Bounce"),
                   bounce=_shaped("bounceSubType", "feedbackId", "timestamp", bouncedRecipients=_RECIPIENTS,
                                  bounceType=_one("Permanent", "Transient")),
                   complaint=_shaped("complaintSubType", "feedbackId", "timestamp",
                                     complaintFeedbackType=_one("abuse", "not-spam"),
                                     complainedRecipients=_RECIPIENTS),
                   mail=_shaped(headers=_listed(_shaped("value", name=_one("Feedback-ID"))))),
    "postmark": _shaped("ID", "SuppressionReason", "Origin", "Details", "Description", "BouncedAt",
                        "ChangedAt",
                        RecordType=_one("Bounce", "SpamComplaint", "SubscriptionChange"),
                        Type=_one("HardBounce", "SoftBounce", "Blocked", "AutoResponder"),
                        Email=_EMAIL, Recipient=_EMAIL, SuppressSending=_one(True, False),
                        Metadata=_shaped("edition")),
    "mailgun": _shaped("reason", "id", "timestamp", event=_one("failed", "complained", "delivered"),
                       severity=_one("permanent", "temporary"), recipient=_EMAIL, **{
                           "delivery-status": _shaped("code", "message", "description", "enhanced-code"),
                           "message": _shaped(headers=_shaped("message-id")),
                           "user-variables": _shaped("edition")}),
    "sendgrid": _listed(_shaped("status", "reason", "sg_event_id", "timestamp", "edition",
                                event=_one("bounce", "dropped", "spamreport", "delivered"),
                                type=_one("bounce", "blocked"), email=_EMAIL)),
}


def _settle(provider: Any, body: bytes, headers: dict[str, str]) -> None:
    """Hand `body` to `provider` as the server would: it reads events or refuses, never fails."""
    # On a thread of its own: when the browser tests ran first in this session, Playwright's sync
    # API keeps an event loop running on the main thread, where asyncio.run() refuses to start.
    coroutine = provider.receive(Incoming(body=body, headers=Headers(headers), received_at=now()))
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            received = pool.submit(asyncio.run, coroutine).result()
    except WebhookError as exc:
        assert 400 <= exc.status < 600 and "\n" not in str(exc)
        return
    for event in received.events:
        assert "@" in event.email and event.event_id and event.kind in EventKind


@pytest.mark.parametrize("name", ["ses", "postmark", "mailgun", "sendgrid"])
def test_arbitrary_payloads_are_read_or_refused(hooked, sns, sendgrid, name):
    provider = PROVIDERS[name](getattr(hooked.bounces.webhooks, name), where=name)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(payload=_SHAPES[name])
    def check(payload: Any) -> None:
        if name == "ses":
            message = sns.sign(sns_notification(json.dumps(payload)))
            _settle(provider, json.dumps(message).encode(), {})
        elif name == "postmark":
            _settle(provider, json.dumps(payload).encode(), POSTMARK_AUTH)
        elif name == "mailgun":
            signature = mailgun_signature(MAILGUN_KEY, int(now().timestamp()))
            _settle(provider, json.dumps({"signature": signature, "event-data": payload}).encode(), {})
        else:
            body = json.dumps(payload).encode()
            _settle(provider, body, sendgrid.headers(body, int(now().timestamp())))

    with respx.mock(assert_all_called=False) as mock:
        mock.get(sns.cert_url).respond(200, content=sns.pem)
        check()
