"""Mailgun: the JSON event webhooks (`{"signature": {...}, "event-data": {...}}`).

Mailgun signs each request: `signature.signature` is the hex HMAC-SHA256 of `timestamp + token`
with the account's HTTP webhook signing key, compared here in constant time. The timestamp must
be within 15 minutes of now, and a token seen within that window is refused: a replay (Mailgun
signs each attempt afresh, so a retry has a token of its own).

Events: `failed` with `severity: permanent` is classified by its delivery status (the enhanced
code, else one in the message, else the SMTP code) through `classify`; Mailgun's own suppressions
(`reason: suppress-bounce` / `suppress-complaint` / `suppress-unsubscribe`: it did not even try)
say what the address is. `failed` with `severity: temporary` is a soft bounce, counted once per
message however many attempts fail (Mailgun reports each, and retries), and not at all when it
was greylisting (a delay by design); `complained` is a complaint; `unsubscribed` an unsubscribe;
the rest (accepted, delivered, opened, ...) is left alone. The event id is Mailgun's `id` with the
event's timestamp (the id is unique only within a day); the edition is the `edition` user
variable (`X-Mailgun-Variables: {"edition": ...}`).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pipeline.bounces.classify import classify, enhanced_code
from pipeline.bounces.esp.base import (
    Forbidden,
    Incoming,
    Malformed,
    Received,
    SeenTokens,
    Stale,
    address,
    check_fresh,
    edition_from_metadata,
    event_time,
    json_body,
    mapping,
    parse_time,
    stable_id,
    string,
    text,
)
from pipeline.config import MailgunWebhook
from pipeline.store.events import Event, EventKind

MAX_AGE = timedelta(minutes=15)
# Mailgun's suppressions: it dropped the message because of what the address did before.
SUPPRESSED = {"suppress-bounce": EventKind.HARD, "suppress-complaint": EventKind.COMPLAINT,
              "suppress-unsubscribe": EventKind.UNSUBSCRIBE}


class Mailgun:
    """Mailgun's signed event webhooks (see the module's docstring)."""

    name: ClassVar[str] = "mailgun"

    def __init__(self, settings: MailgunWebhook, *, where: str) -> None:
        self._key = settings.signing_key.get_secret_value().encode("utf-8")
        self._tokens = SeenTokens(window=MAX_AGE + timedelta(minutes=5))

    async def receive(self, request: Incoming) -> Received:
        payload = mapping(json_body(request.body), "the Mailgun payload")
        signature = mapping(payload.get("signature"), "signature")
        timestamp, token = signature.get("timestamp"), text(signature.get("token"), "signature.token")
        if isinstance(timestamp, int) and not isinstance(timestamp, bool):
            timestamp = str(timestamp)
        timestamp = text(timestamp, "signature.timestamp")
        given = text(signature.get("signature"), "signature.signature")
        expected = hmac.new(self._key, (timestamp + token).encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.strip().lower().encode("utf-8")):
            raise Forbidden("the signature does not verify with the configured signing key")
        signed_at = parse_time(timestamp)
        if signed_at is None:
            raise Malformed("signature.timestamp must be seconds since 1970")
        check_fresh(signed_at, request.received_at, max_age=MAX_AGE, what="the signature's timestamp")
        if not self._tokens.first_time(token, request.received_at):
            raise Stale("this signature token was already used: refused as a replay")
        return _event(mapping(payload.get("event-data"), "event-data"), request.received_at)


def _event(data: dict[str, Any], now: datetime) -> Received:
    name, email = string(data.get("event")), address(data.get("recipient"))
    kind, detail = _kind(name, data)
    if kind is None or email is None:
        return Received(ignored=1)
    return Received(events=(Event(
        event_id=_event_id(data, kind, email), email=email, kind=kind, source="mailgun",
        edition=edition_from_metadata(data.get("user-variables")), detail=detail,
        at=event_time(data.get("timestamp"), now)),))


def _event_id(data: dict[str, Any], kind: EventKind, email: str) -> str:
    """Mailgun's id and time; for a temporary failure, the message and the address instead, so
    that every failed attempt to deliver one message counts as one soft bounce."""
    headers = data.get("message", {}).get("headers") if isinstance(data.get("message"), dict) else None
    message_id = string(headers.get("message-id")) if isinstance(headers, dict) else ""
    if kind == EventKind.SOFT and string(data.get("severity")) != "permanent" and message_id:
        return f"mailgun:temporary:{message_id}:{email.lower()}"
    if string(data.get("id")):
        return f"mailgun:{data['id']}:{data.get('timestamp')}"
    return stable_id("mailgun", data)


def _kind(name: str, data: dict[str, Any]) -> tuple[EventKind | None, str]:
    """The kind of a Mailgun event and the detail to keep with it."""
    if name == "complained":
        return EventKind.COMPLAINT, "complained"
    if name == "unsubscribed":
        return EventKind.UNSUBSCRIBE, "unsubscribed"
    if name != "failed":
        return None, ""
    status = data.get("delivery-status") if isinstance(data.get("delivery-status"), dict) else {}
    message = " ".join(string(status.get(k)) for k in ("message", "description")).strip()
    code = status.get("code") if isinstance(status.get("code"), int) else None
    reason, severity = string(data.get("reason")), string(data.get("severity"))
    detail = " ".join(filter(None, [f"failed ({severity or 'no severity'}, {reason or 'no reason'})",
                                    str(code) if code else "", message]))
    if severity != "permanent":
        return (None, detail) if reason == "greylisted" else (EventKind.SOFT, detail)
    if reason in SUPPRESSED:
        return SUPPRESSED[reason], detail
    enhanced = string(status.get("enhanced-code")) or enhanced_code(message)
    # Nothing to go on (no code, no status): counted as soft, so one vague report removes no one.
    return classify(enhanced, code) or EventKind.SOFT, detail
