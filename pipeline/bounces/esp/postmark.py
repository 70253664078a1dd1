"""Postmark: bounce, spam complaint and subscription change webhooks.

Postmark does not sign its webhooks; the webhook URL carries HTTP basic auth credentials
(`https://USER:PASSWORD@news.example.com/webhooks/postmark`), checked here in constant time. A
request without them, or with others, gets 401 with `WWW-Authenticate` (as HTTP asks) and changes
nothing. Postmark posts one record per request:

- `Bounce`: by its `Type`: HardBounce and BadEmailAddress are hard; SoftBounce, Transient and
  DnsError soft; SpamNotification and SpamComplaint complaints; Blocked and DMARCPolicy policy
  refusals; Unsubscribe (a reader's request by mail) an unsubscribe; the rest (auto-replies,
  address changes, challenge mails, ...) say nothing about the address and are left alone;
- `SpamComplaint`: a complaint;
- `SubscriptionChange` with `SuppressSending: true`: by its `SuppressionReason`, HardBounce hard,
  SpamComplaint a complaint, anything else (ManualSuppression, a reader's unsubscribe) an
  unsubscribe. A reactivation (`SuppressSending: false`) brings no one back: the list decides that.

Deliveries, opens and clicks are left alone. A bounce's id is Postmark's `ID`; a subscription
change has none, so a hash of the record stands for it. The edition is the `edition` entry of
the message's `Metadata` (sent as the `X-PM-Metadata-edition` header).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import datetime
from typing import Any, ClassVar

from pipeline.bounces.esp.base import (
    Incoming,
    Malformed,
    Received,
    Unauthorized,
    address,
    edition_from_metadata,
    event_time,
    json_body,
    mapping,
    stable_id,
    string,
)
from pipeline.config import PostmarkWebhook
from pipeline.store.events import Event, EventKind

# A bounce's `Type` -> the kind of event it is; a type not listed says nothing about the address.
BOUNCE_TYPES = {
    "HardBounce": EventKind.HARD,
    "BadEmailAddress": EventKind.HARD,
    "SoftBounce": EventKind.SOFT,
    "Transient": EventKind.SOFT,
    "DnsError": EventKind.SOFT,
    "SpamNotification": EventKind.COMPLAINT,
    "SpamComplaint": EventKind.COMPLAINT,
    "Blocked": EventKind.POLICY,
    "DMARCPolicy": EventKind.POLICY,
    "Unsubscribe": EventKind.UNSUBSCRIBE,
}
SUPPRESSION_REASONS = {"HardBounce": EventKind.HARD, "SpamComplaint": EventKind.COMPLAINT}
CHALLENGE = {"WWW-Authenticate": 'Basic realm="pipeline webhooks", charset="UTF-8"'}


class Postmark:
    """Postmark's webhooks, behind HTTP basic auth (see the module's docstring)."""

    name: ClassVar[str] = "postmark"

    def __init__(self, settings: PostmarkWebhook, *, where: str) -> None:
        self._username = settings.username.encode("utf-8")
        self._password = settings.password.get_secret_value().encode("utf-8")

    async def receive(self, request: Incoming) -> Received:
        self._authenticate(request.headers.get("authorization", ""))
        record = mapping(json_body(request.body), "the Postmark record")
        kind = string(record.get("RecordType"))
        now = request.received_at
        if kind in ("Bounce", "SpamComplaint"):
            return _bounce(record, now)
        if kind == "SubscriptionChange":
            return _subscription_change(record, now)
        if not kind:
            raise Malformed("RecordType must be a non-empty string")
        return Received(ignored=1)          # Delivery, Open, Click, ...

    def _authenticate(self, header: str) -> None:
        given = _basic_credentials(header)
        user, password = given if given else (b"", b"")
        # Both compared, always, so the answer's timing does not tell which one was wrong.
        matches = hmac.compare_digest(user, self._username) & hmac.compare_digest(password, self._password)
        if given is None or not matches:
            raise Unauthorized("wrong or missing credentials: put the configured user and password in "
                               "the webhook's URL", headers=CHALLENGE)


def _basic_credentials(header: str) -> tuple[bytes, bytes] | None:
    """(user, password) of an `Authorization: Basic ...` header, or None."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def _bounce(record: dict[str, Any], now: datetime) -> Received:
    """A Bounce or SpamComplaint record."""
    bounce_type = string(record.get("Type")) or string(record.get("RecordType"))
    kind = BOUNCE_TYPES.get(bounce_type)
    email = address(record.get("Email"))
    if kind is None or email is None:
        return Received(ignored=1)
    record_id = record.get("ID")
    event_id = (f"postmark:{record_id}" if isinstance(record_id, int | str) and str(record_id)
                else stable_id("postmark", record))
    detail = f"{bounce_type}: {string(record.get('Details')) or string(record.get('Description'))}"
    return Received(events=(Event(
        event_id=event_id, email=email, kind=kind, source="postmark",
        edition=edition_from_metadata(record.get("Metadata")), detail=detail.rstrip(": "),
        at=event_time(record.get("BouncedAt"), now)),))


def _subscription_change(record: dict[str, Any], now: datetime) -> Received:
    email = address(record.get("Recipient"))
    if record.get("SuppressSending") is not True or email is None:
        return Received(ignored=1)
    reason = string(record.get("SuppressionReason"))
    kind = SUPPRESSION_REASONS.get(reason, EventKind.UNSUBSCRIBE)
    origin = string(record.get("Origin"))
    detail = f"suppressed: {reason or 'no reason given'}" + (f" (by {origin})" if origin else "")
    return Received(events=(Event(
        event_id=stable_id("postmark", record), email=email, kind=kind, source="postmark",
        edition=edition_from_metadata(record.get("Metadata")), detail=detail,
        at=event_time(record.get("ChangedAt"), now)),))
