"""SendGrid: the signed event webhook (a JSON array of events per request).

With "Signed Event Webhook Requests" on, SendGrid signs `timestamp + raw body` with ECDSA P-256
and SHA-256: the base64 DER signature is in `X-Twilio-Email-Event-Webhook-Signature`, the
timestamp in `X-Twilio-Email-Event-Webhook-Timestamp`. The verification key from SendGrid's Mail
Settings is configured as given (base64 DER) or as PEM. A timestamp more than an hour old (or in
the future) is refused as a replay; every event is recorded once anyway (by `sg_event_id`).

Events: `bounce` of type `bounce` is hard, unless its status is 4.x.x (soft) or 5.7.x (a policy
refusal, as everywhere else); of type `blocked` it is classified by its status (usually policy).
`dropped` tells what SendGrid's suppression lists say: "Bounced Address" hard, "Spam Reporting
Address" a complaint, "Unsubscribed Address" an unsubscribe (other drops say nothing about the
address). `spamreport` is a complaint, `unsubscribe` and `group_unsubscribe` unsubscribes;
`deferred` (SendGrid retries), deliveries, opens and clicks are left alone. The edition is the
`edition` custom argument (SendGrid echoes custom arguments in each event).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Any, ClassVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.bounces.classify import classify, enhanced_code
from pipeline.bounces.esp.base import (
    Forbidden,
    Incoming,
    Malformed,
    Received,
    address,
    check_fresh,
    edition_from_metadata,
    event_time,
    json_body,
    parse_time,
    stable_id,
    string,
)
from pipeline.config import SendgridWebhook
from pipeline.errors import ConfigError
from pipeline.store.events import Event, EventKind

MAX_AGE = timedelta(hours=1)
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
DROPPED = {"Bounced Address": EventKind.HARD, "Spam Reporting Address": EventKind.COMPLAINT,
           "Unsubscribed Address": EventKind.UNSUBSCRIBE}
SIMPLE = {"spamreport": EventKind.COMPLAINT, "unsubscribe": EventKind.UNSUBSCRIBE,
          "group_unsubscribe": EventKind.UNSUBSCRIBE}


class Sendgrid:
    """SendGrid's signed event webhook (see the module's docstring)."""

    name: ClassVar[str] = "sendgrid"

    def __init__(self, settings: SendgridWebhook, *, where: str) -> None:
        self._key = public_key(settings.public_key.get_secret_value(), where=where)

    async def receive(self, request: Incoming) -> Received:
        signature, timestamp = request.headers.get(SIGNATURE), request.headers.get(TIMESTAMP)
        if not signature or not timestamp:
            raise Forbidden(f"unsigned: the {SIGNATURE} and {TIMESTAMP} headers are required")
        try:
            der = base64.b64decode(signature.strip(), validate=True)
            self._key.verify(der, timestamp.encode("utf-8") + request.body, ec.ECDSA(hashes.SHA256()))
        except (binascii.Error, InvalidSignature, ValueError):
            raise Forbidden("the signature does not verify with the configured public key") from None
        signed_at = parse_time(timestamp.strip())
        if signed_at is None:
            raise Malformed(f"{TIMESTAMP} must be seconds since 1970")
        check_fresh(signed_at, request.received_at, max_age=MAX_AGE, what=f"the {TIMESTAMP}")
        events = json_body(request.body)
        if not isinstance(events, list):
            raise Malformed("the body must be a JSON array of events")
        found, ignored = [], 0
        for item in events:
            event = _event(item, request.received_at) if isinstance(item, dict) else None
            if event is None:
                ignored += 1
            else:
                found.append(event)
        return Received(events=tuple(found), ignored=ignored)


def public_key(value: str, *, where: str) -> ec.EllipticCurvePublicKey:
    """The verification key, base64 DER (SubjectPublicKeyInfo, as SendGrid shows it) or PEM; a
    ConfigError naming `where` unless it is an ECDSA P-256 public key."""
    value = value.strip()
    try:
        if value.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(value.encode("ascii"))
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(value.split()), validate=True))
    except (ValueError, binascii.Error, UnicodeEncodeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(f"{where}.public_key: not an ECDSA P-256 public key; paste the verification key of "
                          "SendGrid's Signed Event Webhook (base64, or PEM)")
    return key


def _event(item: dict[str, Any], now: datetime) -> Event | None:
    email = address(item.get("email"))
    kind, detail = _kind(item)
    if kind is None or email is None:
        return None
    sg_id = string(item.get("sg_event_id"))
    return Event(event_id=f"sendgrid:{sg_id}" if sg_id else stable_id("sendgrid", item), email=email,
                 kind=kind, source="sendgrid", edition=edition_from_metadata(item), detail=detail,
                 at=event_time(item.get("timestamp"), now))


def _kind(item: dict[str, Any]) -> tuple[EventKind | None, str]:
    """The kind of a SendGrid event and the detail to keep with it."""
    name = string(item.get("event"))
    reason, status = string(item.get("reason")), string(item.get("status"))
    if name in SIMPLE:
        return SIMPLE[name], name
    if name == "dropped":
        return DROPPED.get(reason), f"dropped: {reason}"
    if name != "bounce":
        return None, ""
    status = status or enhanced_code(reason) or ""
    bounce_type = string(item.get("type")) or "bounce"
    detail = " ".join(filter(None, [bounce_type, status, reason]))
    if bounce_type == "blocked":
        return classify(status) or EventKind.POLICY, detail
    if status.startswith("4."):
        return EventKind.SOFT, detail
    if status.startswith("5.7."):
        return EventKind.POLICY, detail
    return EventKind.HARD, detail
