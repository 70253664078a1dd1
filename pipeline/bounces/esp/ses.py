"""Amazon SES, through an SNS topic subscribed to `POST /webhooks/ses`.

SNS signs every message: the fields of its type, each as `Name\\nvalue\\n` in a fixed order, signed
with RSA (SignatureVersion 1: SHA1, 2: SHA256) by the certificate at `SigningCertURL`. That URL
must be https on `sns.<region>.amazonaws.com` (or `.amazonaws.com.cn`) and end in `.pem`, checked
before anything is fetched; the certificate is fetched once per URL and kept. Only the topics of
`topic_arns` are accepted (any AWS account can make a topic and have SNS sign its messages). A
`Timestamp` more than an hour old (or in the future) is refused as a replay: SNS retries an HTTP
endpoint within minutes, and an event is recorded once anyway (its id is SES's feedback id and the
address).

`SubscriptionConfirmation` (sent when the topic is subscribed to this URL) is confirmed by GETting
its `SubscribeURL`, itself an SNS https URL; `UnsubscribeConfirmation` is only logged. A
`Notification` carries SES's event as JSON in `Message`: a Bounce gives an event per bounced
recipient (its enhanced status decides through `classify`; without one, `Permanent` is hard and
`Transient`/`Undetermined` soft), a Complaint one per complained recipient (not a `not-spam`
report). The edition comes from the `Feedback-ID` header when SES includes the headers.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pipeline.bounces.classify import classify, enhanced_code
from pipeline.bounces.esp.base import (
    Forbidden,
    Incoming,
    Malformed,
    Received,
    Unavailable,
    address,
    check_fresh,
    edition_from_feedback_id,
    event_time,
    json_body,
    mapping,
    parse_time,
    string,
    text,
)
from pipeline.config import SesWebhook
from pipeline.store.events import Event, EventKind

log = logging.getLogger(__name__)

MAX_AGE = timedelta(hours=1)
FETCH_TIMEOUT = 10.0                # seconds, for the certificate and the subscription confirmation
MAX_CERT_BYTES = 64 * 1024          # an SNS signing certificate is about 2 KB
CACHED_CERTS = 16                   # SNS rotates its certificate rarely; one per region in use
# The hosts SNS signs from and confirms subscriptions on (as AWS's own SDK validators accept).
SNS_HOST = re.compile(r"^sns\.[a-z0-9-]{3,}\.amazonaws\.com(\.cn)?$")
HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
# The fields signed for each message type, in the order they are signed.
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                                 "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                                "Type"),
}
OPTIONAL_FIELDS = {"Subject"}
# Bounce types SES reports, when a recipient's status does not decide.
BOUNCE_TYPES = {"Permanent": EventKind.HARD, "Transient": EventKind.SOFT, "Undetermined": EventKind.SOFT}


class Ses:
    """Amazon SES notifications through SNS (see the module's docstring)."""

    name: ClassVar[str] = "ses"

    def __init__(self, settings: SesWebhook, *, where: str) -> None:
        self.topics = frozenset(settings.topic_arns)
        self._certs: dict[str, x509.Certificate] = {}

    async def receive(self, request: Incoming) -> Received:
        message = mapping(json_body(request.body), "the SNS message")
        kind = text(message.get("Type"), "Type")
        if kind not in SIGNED_FIELDS:
            raise Malformed(f"unknown SNS message Type {kind[:40]!r}")
        header = request.headers.get("x-amz-sns-message-type")
        if header is not None and header != kind:
            raise Malformed("the x-amz-sns-message-type header does not match the message's Type")
        topic = text(message.get("TopicArn"), "TopicArn")
        if topic not in self.topics:
            raise Forbidden("the message comes from an SNS topic not listed in topic_arns")
        cert_url = text(message.get("SigningCertURL"), "SigningCertURL")
        if not _sns_url(cert_url) or not urlsplit(cert_url).path.endswith(".pem"):
            raise Forbidden("SigningCertURL is not an https .pem URL on sns.<region>.amazonaws.com")
        signed_at = parse_time(text(message.get("Timestamp"), "Timestamp"))
        if signed_at is None:
            raise Malformed("Timestamp is not an ISO 8601 time")
        check_fresh(signed_at, request.received_at, max_age=MAX_AGE, what="the SNS message's Timestamp")
        await self._verify(message, kind, cert_url, request.received_at)

        if kind == "SubscriptionConfirmation":
            await _confirm(text(message.get("SubscribeURL"), "SubscribeURL"))
            log.info("confirmed the SNS subscription to %s", topic)
            return Received(note="subscription confirmed")
        if kind == "UnsubscribeConfirmation":
            log.info("SNS says this endpoint was unsubscribed from %s", topic)
            return Received(note="unsubscribe noted")
        return _notification(message, request.received_at)

    async def _verify(self, message: dict[str, Any], kind: str, cert_url: str, now: datetime) -> None:
        version = message.get("SignatureVersion")
        if version not in HASHES:
            raise Malformed("SignatureVersion must be \"1\" or \"2\"")
        try:
            signature = base64.b64decode(text(message.get("Signature"), "Signature"), validate=True)
        except binascii.Error:
            raise Forbidden("the Signature is not base64") from None
        signed = "".join(f"{name}\n{_field(message, name)}\n" for name in SIGNED_FIELDS[kind]
                         if not (name in OPTIONAL_FIELDS and name not in message))
        cert = await self._certificate(cert_url)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise Forbidden("the SNS signing certificate is not valid at this time")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Forbidden("the SNS signing certificate does not hold an RSA key")
        try:
            key.verify(signature, signed.encode("utf-8"), padding.PKCS1v15(), HASHES[version]())
        except InvalidSignature:
            raise Forbidden("the SNS signature does not verify") from None

    async def _certificate(self, url: str) -> x509.Certificate:
        """The certificate at `url` (checked to be SNS's), fetched once."""
        if url in self._certs:
            return self._certs[url]
        data = await _fetch(url, what="the SNS signing certificate", limit=MAX_CERT_BYTES)
        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError:
            raise Forbidden("SigningCertURL does not hold a PEM X.509 certificate") from None
        if len(self._certs) >= CACHED_CERTS:
            del self._certs[next(iter(self._certs))]
        self._certs[url] = cert
        return cert


def _field(message: dict[str, Any], name: str) -> str:
    value = message.get(name)
    if not isinstance(value, str):
        raise Malformed(f"{name} must be a string")
    return value


def _sns_url(url: str) -> bool:
    """An https URL on an SNS host, with no credentials or port of its own."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme == "https" and port in (None, 443) and parts.username is None
            and parts.password is None and bool(SNS_HOST.match(parts.hostname or "")))


async def _fetch(url: str, *, what: str, limit: int) -> bytes:
    """GET `url` (no redirects), at most `limit` bytes; Unavailable if it cannot be had."""
    try:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise Unavailable(f"{what} answered HTTP {response.status_code}")
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    raise Forbidden(f"{what} is larger than {limit // 1024} KB")
            return bytes(data)
    except httpx.HTTPError as exc:
        raise Unavailable(f"could not fetch {what} ({type(exc).__name__})") from None


async def _confirm(url: str) -> None:
    """Confirm an SNS subscription: GET its SubscribeURL, which must be SNS's own."""
    if not _sns_url(url):
        raise Forbidden("SubscribeURL is not an https URL on sns.<region>.amazonaws.com")
    await _fetch(url, what="the SNS subscription confirmation", limit=MAX_CERT_BYTES)


def _notification(message: dict[str, Any], now: datetime) -> Received:
    """The events of a Notification whose Message is SES's event."""
    body = message.get("Message")
    if not isinstance(body, str) or not body.lstrip().startswith("{"):
        # e.g. "Successfully validated SNS topic for Amazon SES event publishing."
        return Received(ignored=1)
    ses = mapping(json_body(body.encode("utf-8")), "the SES event in Message")
    kind = string(ses.get("eventType")) or string(ses.get("notificationType"))
    mail = ses.get("mail") if isinstance(ses.get("mail"), dict) else {}
    edition = _edition(mail)
    if kind == "Bounce":
        return _bounce(mapping(ses.get("bounce"), "bounce"), message, edition, now)
    if kind == "Complaint":
        return _complaint(mapping(ses.get("complaint"), "complaint"), message, edition, now)
    return Received(ignored=1)          # Send, Delivery, Open, Click, DeliveryDelay, Reject, ...


def _bounce(bounce: dict[str, Any], message: dict[str, Any], edition: str | None, now: datetime) -> Received:
    recipients = bounce.get("bouncedRecipients")
    if not isinstance(recipients, list):
        raise Malformed("bounce.bouncedRecipients must be a list")
    feedback = string(bounce.get("feedbackId")) or text(message.get("MessageId"), "MessageId")
    at = event_time(bounce.get("timestamp"), now)
    fallback = BOUNCE_TYPES.get(string(bounce.get("bounceType")), EventKind.SOFT)
    kind_text = "/".join(filter(None, (string(bounce.get(k)) for k in ("bounceType", "bounceSubType"))))
    readable, ignored = _readable(recipients)
    events = []
    for email, recipient in readable:
        diagnostic = string(recipient.get("diagnosticCode"))
        status = string(recipient.get("status")) or enhanced_code(diagnostic)
        kind = (classify(status) if status else None) or fallback
        detail = " ".join(filter(None, [kind_text, status, diagnostic]))
        events.append(Event(event_id=f"ses:{feedback}:{email.lower()}", email=email, kind=kind,
                            source="ses", edition=edition, detail=detail, at=at))
    return Received(events=tuple(events), ignored=ignored)


def _complaint(complaint: dict[str, Any], message: dict[str, Any], edition: str | None, now: datetime
               ) -> Received:
    recipients = complaint.get("complainedRecipients")
    if not isinstance(recipients, list):
        raise Malformed("complaint.complainedRecipients must be a list")
    feedback_type = complaint.get("complaintFeedbackType")
    if feedback_type == "not-spam":     # the reader said it is *not* spam
        return Received(ignored=len(recipients))
    feedback = string(complaint.get("feedbackId")) or text(message.get("MessageId"), "MessageId")
    at = event_time(complaint.get("timestamp"), now)
    detail = " ".join(filter(None, ["complaint", string(feedback_type),
                                    string(complaint.get("complaintSubType"))]))
    readable, ignored = _readable(recipients)
    events = [Event(event_id=f"ses:{feedback}:{email.lower()}", email=email, kind=EventKind.COMPLAINT,
                    source="ses", edition=edition, detail=detail, at=at) for email, _ in readable]
    return Received(events=tuple(events), ignored=ignored)


def _readable(recipients: list[Any]) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """(address, entry) of the recipients with a readable `emailAddress`, and how many had none."""
    readable = [(email, r) for r in recipients
                if isinstance(r, dict) and (email := address(r.get("emailAddress"))) is not None]
    return readable, len(recipients) - len(readable)


def _edition(mail: dict[str, Any]) -> str | None:
    """The edition from the Feedback-ID among the original headers SES includes (if it does)."""
    headers = mail.get("headers")
    if isinstance(headers, list):
        for header in headers:
            if isinstance(header, dict) and str(header.get("name", "")).lower() == "feedback-id":
                return edition_from_feedback_id(header.get("value"))
    return None
